"""How much do a method's pose figures move with the pipeline's own randomness, its matches held fixed?

    .venv/bin/python scripts/pipeline_seeds.py COMPARE_DIR [COMPARE_DIR ...] [--seeds 5] [--max-error PX] --work DIR

COMPARE_DIR is one scene's `msk compare --gt` output (report.json, runs/<method>/database.db); its
image folder, pairs and ground truth are read from report.json, relative to the folder `msk compare` ran in.
For each method and seed, the database is copied into DIR/<COMPARE_DIR's parent>/<scene>/<method>/
<seed>, its two-view geometries cleared, its raw matches verified again with that RANSAC seed, and the
copy mapped with that mapper seed, on one thread, as `msk compare` maps. Seed 0 repeats `msk compare`
itself. Printed: relative pose AUC@1° and 5° and 3D points per seed, then each method's mean and
standard deviation over the seeds. The bootstrap intervals of `msk compare --gt` cover which images
a scene happens to have; this covers the verification's and the mapper's sampling, the images fixed.
--max-error verifies with another RANSAC threshold in pixels (COLMAP's default: 4).
"""

import argparse
import json
import shutil
import zlib  # noqa: F401  (before pycolmap: see colmap_plugin/__init__.py)
from pathlib import Path

import numpy as np
import pycolmap

from colmap_plugin.database import open_database
from colmap_plugin.matching import verify_pairs
from colmap_plugin.pairs import select_pairs
from colmap_plugin.reconstruction import ReconstructionConf, reconstruct
from reconstruction_eval.metrics import pose_auc, relative_pose_errors

THRESHOLDS = (1, 5)


def remap(
    run: Path, image_dir: Path, pairs_spec: str, seed: int, work: Path, max_error: float | None = None
) -> pycolmap.Reconstruction:
    """The run's raw matches verified with RANSAC seed `seed` and mapped with mapper seed `seed`, in `work`;
    `pairs_spec` names the pairs `msk compare` matched (its report's "pairs")."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    database = work / "database.db"
    shutil.copy(run / "database.db", database)
    with open_database(database) as opened:
        opened.clear_two_view_geometries()
        pairs = select_pairs(pairs_spec, opened)
    verify_pairs(database, pairs, seed, max_error)
    return reconstruct(database, image_dir, work / "sparse", ReconstructionConf(num_threads=1, seed=seed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("compare_dirs", nargs="+", type=Path)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--work", type=Path, required=True, help="folder for the re-verified databases and models")
    parser.add_argument("--max-error", type=float, help="RANSAC's inlier threshold in pixels (default: COLMAP's)")
    args = parser.parse_args()
    for compare_dir in args.compare_dirs:
        report = json.loads((compare_dir / "report.json").read_text())
        gt = pycolmap.Reconstruction(Path(report["gt"]))
        for run in sorted((compare_dir / "runs").iterdir()):
            rows = []
            for seed in range(args.seeds):
                work = args.work / compare_dir.parent.name / compare_dir.name / run.name / str(seed)
                model = remap(run, Path(report["images"]), report["pairs"], seed, work, args.max_error)
                auc = pose_auc(relative_pose_errors(model, gt), THRESHOLDS)
                rows.append([auc[1], auc[5], model.num_points3D()])
                print(
                    f"{compare_dir.name} {run.name} seed {seed}: AUC@1 {auc[1]:.2f}, AUC@5 {auc[5]:.2f}, "
                    f"{model.num_points3D()} points",
                    flush=True,
                )
            mean, std = np.mean(rows, axis=0), np.std(rows, axis=0)
            print(
                f"{compare_dir.name} {run.name} over {args.seeds} seeds: AUC@1 {mean[0]:.2f} ± {std[0]:.2f}, "
                f"AUC@5 {mean[1]:.2f} ± {std[1]:.2f}, points {mean[2]:.0f} ± {std[2]:.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
