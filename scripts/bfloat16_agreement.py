"""bfloat16 against float32 on two fountain images: MSK descriptors, and the nearest-neighbour searches.

    .venv/bin/python scripts/bfloat16_agreement.py

SIFT keypoints (8,192 per image at 1600 px) described both ways: the cosine between the two
descriptors of each keypoint, how many of image 0's nearest neighbours in image 1 stay the same, and
the descriptor time per image (2 threads, second of two runs). Then the neighbour searches of the
`learned` matcher (`nearest_both_ways`) between two images' `msk` features (12,288 keypoints each),
exact and with float32 or bfloat16 shortlists, on one thread as a matching worker runs them.
"""

import time
import zlib  # noqa: F401  (before pycolmap: see colmap_plugin/__init__.py)
from pathlib import Path

import numpy as np
import torch

from colmap_plugin.datasets import datasets_root
from colmap_plugin.features import create_extractor
from colmap_plugin.images import list_images, read_image
from colmap_plugin.keypoints import affine_keypoints
from colmap_plugin.matchers import SEARCHES, descriptors_to_tensor, nearest_both_ways
from msk.descriptor import describe_keypoints, native_bfloat16
from msk.weights import load_descriptor

SEARCH_KEYPOINTS = 12288
RUNS = 3  # the search is timed by its fastest run


def main() -> None:
    torch.set_num_threads(2)
    print(f"native bfloat16 on this CPU: {native_bfloat16()}")
    model, sift = load_descriptor(), create_extractor("sift", max_keypoints=8192)
    image_dir = datasets_root() / "eval" / "fountain-P11" / "images"
    descriptors, seconds = {False: [], True: []}, {False: [], True: []}
    for name in list_images(image_dir)[:2]:
        image = read_image(image_dir / name, 1600).gray
        found = sift.extract(image)
        keypoints = affine_keypoints(found.keypoints, found.scales, found.orientations)
        for bfloat16 in (False, True):
            for _ in range(2):
                start = time.perf_counter()
                result = describe_keypoints(model, image, keypoints, bfloat16=bfloat16)
            seconds[bfloat16].append(time.perf_counter() - start)
            descriptors[bfloat16].append(result)
    cosine = torch.cat([(a * b).sum(dim=1) for a, b in zip(descriptors[False], descriptors[True])])
    nearest = {key: (pair[0] @ pair[1].T).argmax(dim=1) for key, pair in descriptors.items()}
    print(f"cosine float32 / bfloat16: min {cosine.min():.5f}, mean {cosine.mean():.6f}")
    print(f"same nearest neighbour in the other image: {(nearest[False] == nearest[True]).float().mean():.2%}")
    print(f"seconds per image: float32 {np.mean(seconds[False]):.3f}, bfloat16 {np.mean(seconds[True]):.3f}")
    search_agreement(image_dir)


def search_agreement(image_dir: Path) -> None:
    """The learned matcher's neighbour searches (SEARCHES) against the exact one, on one thread as a worker."""
    msk = create_extractor("msk", max_keypoints=SEARCH_KEYPOINTS)
    desc0, desc1 = (
        descriptors_to_tensor(msk.extract(read_image(image_dir / name, 1600).gray).descriptors)
        for name in list_images(image_dir)[3:5]
    )
    torch.set_num_threads(1)
    results = {}
    for search in SEARCHES:
        seconds = []
        for _ in range(RUNS):
            start = time.perf_counter()
            nearest = nearest_both_ways(desc0, desc1, search)
            seconds.append(time.perf_counter() - start)
        results[search] = nearest, min(seconds)
    print(f"nearest_both_ways, {len(desc0)} x {len(desc1)} msk keypoints, one thread:")
    exact, exact_seconds = results["exact"]
    print(f"  exact: {exact_seconds:.3f} s")
    for search in SEARCHES[1:]:
        nearest, seconds = results[search]
        print(f"  {search} shortlists: {seconds:.3f} s")
        for direction, (exact_similarity, exact_index), (similarity, index) in zip(
            ("0 -> 1", "1 -> 0"), exact, nearest
        ):
            print(
                f"    {direction}: same nearest neighbour {(index[:, 0] == exact_index[:, 0]).float().mean():.3%}, "
                f"same two {(index == exact_index).all(dim=1).float().mean():.3%}, "
                f"largest score difference {(similarity - exact_similarity).abs().max():.1e}"
            )


if __name__ == "__main__":
    main()
