"""Does letting image 1's keypoints propose candidates too (`learned` matcher, both_ways) add false matches?

    .venv/bin/python scripts/both_way_candidates.py

3 images from each of 3 validation scenes of the training set (never eval/), SIFT keypoints with
MSK descriptors (`sift+msk`, 4,096 keypoints at 1024 px): mean matches of same-scene pairs, and
of pairs from different scenes, which share no 3D point.
"""

import zlib  # noqa: F401  (before pycolmap: see colmap_plugin/__init__.py)
from itertools import combinations

import numpy as np
import torch

from colmap_plugin.datasets import datasets_root
from colmap_plugin.features import create_extractor
from colmap_plugin.images import list_images, read_image
from msk.plugin import LearnedMatcher

VALIDATION_SCENES = ("drone_palm_desert", "monstree", "vggsfm_british_museum")


def main() -> None:
    torch.set_num_threads(2)
    extractor = create_extractor("sift+msk", max_keypoints=4096)
    features = {}
    for scene in VALIDATION_SCENES:
        image_dir = datasets_root() / "train" / scene / "images"
        for name in list_images(image_dir)[:3]:
            features[(scene, name)] = extractor.extract(read_image(image_dir / name, 1024).gray)
    for both_ways in (False, True):
        matcher = LearnedMatcher(both_ways=both_ways)
        same, cross = [], []
        for (key0, features0), (key1, features1) in combinations(features.items(), 2):
            count = len(matcher.match(features0, features1)[0])
            (same if key0[0] == key1[0] else cross).append(count)
        print(
            f"both_ways={both_ways}: same-scene pairs {np.mean(same):.1f} matches, "
            f"different scenes {np.mean(cross):.1f} (at most {max(cross)})"
        )


if __name__ == "__main__":
    main()
