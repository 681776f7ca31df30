"""How much of a self-calibrated reconstruction's pose error is the principal point held at the image centre?

    .venv/bin/python scripts/principal_point_bias.py COMPARE_DIR [COMPARE_DIR ...] 2>/dev/null
    .venv/bin/python scripts/principal_point_bias.py --gt GT_MODEL MODEL [MODEL ...] 2>/dev/null

COMPARE_DIR is one scene's `msk compare` output made with --gt and estimated intrinsics (report.json,
runs/<method>/sparse). The second form takes sparse models of one scene and its ground truth instead
(e.g. scripts/match_subsets.py's variants, DIR/<scene>/<method>/<variant>/sparse). COLMAP holds each
camera's principal point at the image centre; the Strecha cameras' lies 11.5 px off it, and bundle
adjustment can only absorb that by tilting the cameras. Per model, the relative pose AUC and mean error
are printed three ways: as mapped; after bundle adjustment of the mapped model (the control: the
incremental mapper ends with the same adjustment, so its models do not move, while the global mapper's
do a little); and after bundle adjustment with each camera's principal point set to the ground
truth's, focal length and distortion still estimated: compare these with the control. Then, for a
COMPARE_DIR, how each two methods' per-pair errors correlate (near 1 when a bias both share decides
them), or, for several MODELs (say the draws of match_subsets.py --thin), their mean AUC and its
sample standard deviation. (pycolmap's bundle adjustment turns COLMAP's log back on: hence 2>/dev/null.)
"""

import json
import os
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


def print_rows(title: str, models: dict[str, Path], gt: pycolmap.Reconstruction, correlations: bool) -> None:
    """Each model's AUC and mean error three ways, then the correlations or the mean (see the module's docstring)."""
    ways = {
        "as mapped": lambda sparse: pycolmap.Reconstruction(sparse),
        "bundle-adjusted again": lambda sparse: adjusted(sparse, None),
        "ground-truth principal point": lambda sparse: adjusted(sparse, gt),
    }
    print(f"\n{title}")
    for way, load in ways.items():
        errors = {name: relative_pose_errors(load(sparse), gt) for name, sparse in models.items()}
        aucs = {name: pose_auc(error, (1, 5)) for name, error in errors.items()}
        print(f"  {way}")
        for name, error in errors.items():
            print(f"    {name}: AUC@1/5 {aucs[name][1]:.2f}/{aucs[name][5]:.2f}, mean {error.mean():.3f} deg")
        if correlations:
            for first, second in combinations(models, 2):
                print(f"    correlation {first} · {second}: {np.corrcoef(errors[first], errors[second])[0, 1]:.3f}")
        elif len(models) > 1:  # e.g. the draws of one variant (scripts/match_subsets.py --thin)
            summary = ", ".join(
                f"AUC@{t} {np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"
                for t, values in ((t, [auc[t] for auc in aucs.values()]) for t in (1, 5))
            )
            print(f"    over the {len(models)} models: {summary}")


def main(compare_dirs: list[Path]) -> None:
    for compare_dir in compare_dirs:
        report = json.loads((compare_dir / "report.json").read_text())
        if report.get("intrinsics") != "estimated" or not report.get("gt"):
            sys.exit(f"{compare_dir}: needs a compare run with --gt and estimated intrinsics")
        gt = pycolmap.Reconstruction(report["gt"])
        methods = [name for name, run in report["methods"].items() if run["error"] is None]
        if not methods:
            sys.exit(f"{compare_dir}: no method built a model")
        models = {method: compare_dir / "runs" / method / "sparse" for method in methods}
        print_rows(str(compare_dir), models, gt, correlations=True)


def main_models(gt_path: Path, model_paths: list[Path]) -> None:
    common = Path(os.path.commonpath(model_paths))
    names = {str(path.relative_to(common)) if path != common else str(path): path for path in model_paths}
    print_rows(f"{common} (ground truth {gt_path})", names, pycolmap.Reconstruction(gt_path), correlations=False)


if __name__ == "__main__":
    if len(sys.argv) < 2 or (sys.argv[1] == "--gt" and len(sys.argv) < 4):
        sys.exit(__doc__)
    if sys.argv[1] == "--gt":
        main_models(Path(sys.argv[2]), [Path(arg) for arg in sys.argv[3:]])
    else:
        main([Path(arg) for arg in sys.argv[1:]])
