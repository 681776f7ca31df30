"""Could a coarse match skip pairs that do not overlap? The learned matcher on each image's strongest keypoints.

    .venv/bin/python scripts/coarse_overlap.py RUN [RUN ...]

RUN is a method's folder of an `msk compare` output (`runs/msk`, holding features.h5 and database.db).
Every pair of its images is matched again by the `learned` matcher on each image's K strongest
keypoints (by detector score; K = 512, 1,024, 2,048). A pair with fewer than T such matches would be
skipped: printed per K and T, how many pairs that skips, and how many of the pairs that the full
matching verified it loses, with their inlier counts (the largest four). One thread.
"""

import sys
import zlib  # noqa: F401  (before pycolmap: see colmap_plugin/__init__.py)
from itertools import combinations
from pathlib import Path

import numpy as np
import torch

from colmap_plugin.database import image_ids_by_name, open_database
from colmap_plugin.features import Features
from colmap_plugin.matchers import create_matcher
from colmap_plugin.store import FeatureStore
from reconstruction_eval.statistics import verified_pairs

STRONGEST = (512, 1024, 2048)
MIN_MATCHES = (1, 2, 3, 5, 8)


def strongest(features: Features, count: int) -> Features:
    """The `count` keypoints of highest score, in their stored order."""
    keep = np.sort(np.argsort(-features.scores, kind="stable")[:count])
    return Features(
        *(
            part[keep]
            for part in (
                features.keypoints,
                features.scales,
                features.orientations,
                features.scores,
                features.descriptors,
            )
        )
    )


def main(run: Path) -> None:
    with open_database(run / "database.db") as database:
        names = sorted(image_ids_by_name(database))
    with FeatureStore(run / "features.h5", writable=False) as store:
        features = {name: store.read(name) for name in names}
    inliers = {pair: len(matches) for pair, matches in verified_pairs(run / "database.db").items()}
    matcher = create_matcher("learned")
    pairs = list(combinations(sorted(features), 2))
    verified = np.array([inliers.get(pair, 0) for pair in pairs])
    print(f"{run}: {len(pairs)} pairs, {np.count_nonzero(verified)} verified")
    for count in STRONGEST:
        subsets = {name: strongest(found, count) for name, found in features.items()}
        coarse = np.array([len(matcher.match(subsets[name0], subsets[name1])[0]) for name0, name1 in pairs])
        for threshold in MIN_MATCHES:
            skipped = coarse < threshold
            lost = np.sort(verified[skipped & (verified > 0)])[::-1]
            print(
                f"  {count} keypoints, under {threshold} matches: skips {skipped.sum()}, "
                f"loses {len(lost)} verified {lost[:4].tolist()}"
            )


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    torch.set_num_threads(1)
    for arg in sys.argv[1:]:
        main(Path(arg))
