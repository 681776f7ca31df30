"""How much of a self-calibrated reconstruction's pose error is the principal point held at the image centre?

    .venv/bin/python scripts/principal_point_bias.py COMPARE_DIR [COMPARE_DIR ...] 2>/dev/null

COMPARE_DIR is one scene's `msk compare` output made with --gt and estimated intrinsics (report.json,
runs/<method>/sparse). COLMAP holds each camera's principal point at the image centre; the Strecha
cameras' lies 11.5 px off it, and bundle adjustment can only absorb that by tilting the cameras.
Per method, the relative pose AUC and mean error are printed three ways: as mapped; after bundle
adjustment of the mapped model (the control: the incremental mapper ends with the same adjustment, so
its models do not move, while the global mapper's do a little); and after bundle adjustment with each
camera's principal point set to the ground truth's, focal length and distortion still estimated:
compare this row with the control. The correlation column is that of the two methods' per-pair
errors: near 1 when a bias both share decides them. (pycolmap's bundle adjustment turns COLMAP's log
back on: hence 2>/dev/null.)
"""

import json
import sys
import zlib  # noqa: F401  (before pycolmap: see colmap_plugin/__init__.py)
from itertools import combinations
from pathlib import Path

import numpy as np
import pycolmap

from reconstruction_eval.metrics import pose_auc, relative_pose_errors


def adjusted(model_path: Path, gt: pycolmap.Reconstruction | None) -> pycolmap.Reconstruction:
    """The model after bundle adjustment; with `gt`, its principal points first set to the ground truth's."""
    model = pycolmap.Reconstruction(model_path)
    if gt is not None:
        gt_cameras = {image.name: gt.cameras[image.camera_id] for image in gt.images.values()}
        # A camera shared by several images takes the ground truth's camera of its first image that has
        # one; a camera none of whose images has a ground truth keeps its principal point.
        truth_of_camera = {}
        for image in model.images.values():
            if image.name in gt_cameras:
                truth_of_camera.setdefault(image.camera_id, gt_cameras[image.name])
        for camera_id, gt_camera in truth_of_camera.items():
            camera = model.cameras[camera_id]
            camera.principal_point_x = gt_camera.principal_point_x * camera.width / gt_camera.width
            camera.principal_point_y = gt_camera.principal_point_y * camera.height / gt_camera.height
    options = pycolmap.BundleAdjustmentOptions()
    options.print_summary = False
    pycolmap.bundle_adjustment(model, options)
    return model


def main(compare_dirs: list[Path]) -> None:
    for compare_dir in compare_dirs:
        report = json.loads((compare_dir / "report.json").read_text())
        if report.get("intrinsics") != "estimated" or not report.get("gt"):
            sys.exit(f"{compare_dir}: needs a compare run with --gt and estimated intrinsics")
        gt = pycolmap.Reconstruction(report["gt"])
        methods = [name for name, run in report["methods"].items() if run["error"] is None]
        if not methods:
            sys.exit(f"{compare_dir}: no method built a model")
        errors = {}
        for method in methods:
            sparse = compare_dir / "runs" / method / "sparse"
            errors[method] = {
                "as mapped": relative_pose_errors(pycolmap.Reconstruction(sparse), gt),
                "bundle-adjusted again": relative_pose_errors(adjusted(sparse, None), gt),
                "ground-truth principal point": relative_pose_errors(adjusted(sparse, gt), gt),
            }
        print(f"\n{compare_dir}")
        for way in errors[methods[0]]:
            row = []
            for method in methods:
                auc = pose_auc(errors[method][way])
                row.append(f"{method} AUC@1/5 {auc[1]:.1f}/{auc[5]:.1f} mean {errors[method][way].mean():.3f} deg")
            for first, second in combinations(methods, 2):
                row.append(f"corr {np.corrcoef(errors[first][way], errors[second][way])[0, 1]:.3f}")
            print(f"  {way:29s} " + " | ".join(row))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main([Path(arg) for arg in sys.argv[1:]])
