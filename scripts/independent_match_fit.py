"""Can poses be ranked without ground truth? How well each model's cameras fit another method's matches.

    .venv/bin/python scripts/independent_match_fit.py TEST_RUN MODEL [MODEL ...]

TEST_RUN is a method's folder of an `msk compare` output (`runs/<method>`, holding database.db): its
verified inlier matches are the test set. Each MODEL is a COLMAP model folder (a run's sparse/, or a
scene's ground truth). For every verified pair whose images both models' cameras hold, the Sampson
distances of the test matches under the model's geometry (`reconstruction_eval.metrics.epipolar_errors`);
printed per model: the mean over pairs of their median, and the mean distance capped at 1 px. A proxy
for pose accuracy on scenes without ground truth would rank the ground truth first.
"""

import sys
import zlib  # noqa: F401  (before pycolmap: see colmap_plugin/__init__.py)
from pathlib import Path

import numpy as np
import pycolmap

from reconstruction_eval.metrics import epipolar_errors
from reconstruction_eval.statistics import keypoint_positions, verified_pairs


def main(test_run: Path, models: list[Path]) -> None:
    pairs = verified_pairs(test_run / "database.db")
    keypoints = keypoint_positions(test_run / "database.db")
    for path in models:
        model = pycolmap.Reconstruction(path)
        posed = {image.name for image in model.images.values() if image.has_pose}
        medians, capped = [], []
        for (name0, name1), matches in pairs.items():
            if name0 in posed and name1 in posed:
                errors = epipolar_errors(
                    model, name0, name1, keypoints[name0][matches[:, 0]], keypoints[name1][matches[:, 1]]
                )
                medians.append(np.median(errors))
                capped.append(np.minimum(errors, 1.0).mean())
        print(
            f"{path}: {len(medians)} pairs, mean median {np.mean(medians):.4f} px, mean capped {np.mean(capped):.4f} px"
        )


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), [Path(arg) for arg in sys.argv[2:]])
