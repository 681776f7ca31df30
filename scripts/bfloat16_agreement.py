"""bfloat16 against float32 on two fountain images: MSK descriptors, and the nearest-neighbour search.

    .venv/bin/python scripts/bfloat16_agreement.py

SIFT keypoints (8,192 per image at 1600 px) described both ways: the cosine between the two
descriptors of each keypoint, how many of image 0's nearest neighbours in image 1 stay the same, and
the descriptor time per image (2 threads, second of two runs). Then the neighbour search of the
`learned` matcher (`two_nearest`) on the float32 descriptors with and without its bfloat16 shortlist.
"""

import time
import zlib  # noqa: F401  (before pycolmap: see colmap_plugin/__init__.py)

import numpy as np
import torch

from colmap_plugin.datasets import datasets_root
from colmap_plugin.features import create_extractor
from colmap_plugin.images import list_images, read_image
from colmap_plugin.keypoints import affine_keypoints
from colmap_plugin.matchers import two_nearest
from msk.descriptor import describe_keypoints, native_bfloat16
from msk.weights import load_descriptor


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
    desc0, desc1 = descriptors[False]
    times = {}
    for bfloat16 in (False, True):
        two_nearest(desc0, desc1, bfloat16)
        start = time.perf_counter()
        times[bfloat16] = two_nearest(desc0, desc1, bfloat16), time.perf_counter() - start
    (exact, exact_index), exact_seconds = times[False]
    (_, index), shortlist_seconds = times[True]
    same_nearest = (index[:, 0] == exact_index[:, 0]).float().mean()
    print(
        f"two_nearest {len(desc0)} x {len(desc1)}: same nearest neighbour {same_nearest:.3%}, "
        f"same two {(index == exact_index).all(dim=1).float().mean():.3%}; "
        f"seconds float32 {exact_seconds:.3f}, bfloat16 shortlist {shortlist_seconds:.3f}"
    )


if __name__ == "__main__":
    main()
