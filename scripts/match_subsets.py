"""Which verified matches cost pose accuracy? A method's matches again, some removed or verified more strictly, mapped.

    .venv/bin/python scripts/match_subsets.py COMPARE_DIR --work DIR [--method sift+msk]
        [--max-error PX] [--keep all|shared|PX] [--thin FRACTION [--draws 10]] [--reference colmap-sift]
        [--geometry MODEL]

COMPARE_DIR is one scene's `msk compare` output (report.json, runs/<method>/database.db; paths in
report.json are relative to the folder `msk compare` ran in). The method's database is copied into
DIR/<scene>/<method>/<variant>. With --max-error its raw matches are verified again with that RANSAC
threshold in pixels (COLMAP's default is 4), else its two-view geometries are kept as they are. --keep
then removes inlier matches: `shared` keeps those that the --reference method verified too (same
keypoints: `sift+msk` and `colmap-sift`), a number PX keeps those and every other within PX of the true
epipolar geometry (an oracle: what no matcher can know). The copy is mapped as `msk compare` maps
(mapper seed 0, one thread). --thin FRACTION instead maps --draws copies, each keeping that share of
every pair's remaining inliers (at least the 15 the mapper needs), drawn at random (seeds 0, 1, ...),
and prints the mean, sample standard deviation and range of their 3D points and AUC: how much a
variant's figures move when a few of its matches change, to tell whether two variants differ by more
than that. (The draws share most of their matches and the mapper's seed: they do not measure how the
figures would move with other images, which `msk compare`'s intervals do.) Printed per model: inlier
matches kept, their share over 1 px off the true geometry, registered images, 3D points, mean track
length, reprojection error and, with the compare's ground truth, relative pose AUC@1/5. --geometry measures the
epipolar errors against another model instead, for scenes without ground truth (e.g. the training
build's SIFT model): no AUC is printed then, since poses measured against one method's model favour
that method.
"""

import argparse
import json
import shutil
import zlib  # noqa: F401  (before pycolmap: see colmap_plugin/__init__.py)
from pathlib import Path
from typing import Callable

import numpy as np
import pycolmap

from colmap_plugin.database import open_database
from colmap_plugin.matching import verify_pairs
from colmap_plugin.pairs import select_pairs
from colmap_plugin.reconstruction import ReconstructionConf, reconstruct
from reconstruction_eval.compare import verified_match_errors
from reconstruction_eval.metrics import epipolar_errors, pose_auc, relative_pose_errors
from reconstruction_eval.statistics import keypoint_positions, verified_pairs


def pair_keys(matches: np.ndarray) -> np.ndarray:
    """One integer (K,) per match (K, 2) of a pair, to compare two methods' matches of the same keypoints."""
    return matches[:, 0].astype(np.int64) << 32 | matches[:, 1].astype(np.int64)


def select_inliers(database: Path, select: Callable[[str, str, np.ndarray], np.ndarray]) -> None:
    """Keeps of each pair's inlier matches (K, 2) in `database` those `select(name0, name1, inliers)` marks (K,)."""
    with open_database(database) as opened:
        names = {image.image_id: image.name for image in opened.read_all_images()}
        for pair_id, two_view in zip(*opened.read_two_view_geometries(), strict=True):
            id0, id1 = pycolmap.pair_id_to_image_pair(pair_id)
            inliers = np.asarray(two_view.inlier_matches, dtype=np.int64)
            if len(inliers) == 0:
                continue
            two_view.inlier_matches = inliers[select(names[id0], names[id1], inliers)].astype(np.uint32)
            opened.update_two_view_geometry(id0, id1, two_view)


def keep_inliers(database: Path, keep: str, reference: Path, geometry: pycolmap.Reconstruction | None) -> None:
    """Removes inlier matches from `database`'s two-view geometries, as --keep says (see the module's docstring)."""
    if keep == "all":
        return
    shared = verified_pairs(reference)
    keypoints = keypoint_positions(database) if keep != "shared" else {}

    def kept(name0: str, name1: str, inliers: np.ndarray) -> np.ndarray:
        in_reference = shared.get((name0, name1)) if name0 < name1 else shared.get((name1, name0))
        if in_reference is None:
            in_reference = np.zeros((0, 2), np.int64)
        elif name0 > name1:
            in_reference = in_reference[:, ::-1]
        marks = np.isin(pair_keys(inliers), pair_keys(in_reference))
        if keep != "shared":
            points0, points1 = keypoints[name0][inliers[:, 0]], keypoints[name1][inliers[:, 1]]
            marks |= epipolar_errors(geometry, name0, name1, points0, points1) < float(keep)
        return marks

    select_inliers(database, kept)


# The incremental mapper ignores pairs with fewer inliers than this.
MAPPER_MIN_MATCHES = pycolmap.IncrementalPipelineOptions().min_num_matches


def thin(database: Path, fraction: float, draw: int) -> None:
    """Keeps a random `fraction` of each of `database`'s two-view geometries' inlier matches.

    A pair keeps at least MAPPER_MIN_MATCHES of them (or all it has): thinning must not take from the
    mapper a pair that the variant gives it, as 95% of a 15-inlier pair would in every draw.
    """
    rng = np.random.default_rng(draw)

    def drawn(name0: str, name1: str, inliers: np.ndarray) -> np.ndarray:
        count = max(round(fraction * len(inliers)), min(len(inliers), MAPPER_MIN_MATCHES))
        return np.sort(rng.permutation(len(inliers))[:count])

    select_inliers(database, drawn)


def map_and_measure(
    database: Path,
    images: Path,
    label: str,
    geometry: pycolmap.Reconstruction | None,
    gt: pycolmap.Reconstruction | None,
) -> dict[str, float]:
    """Maps `database` as `msk compare` does (into its folder's sparse/), prints its figures and returns them."""
    model = reconstruct(database, images, database.parent / "sparse", ReconstructionConf(num_threads=1, seed=0))
    figures = {"points": model.num_points3D()}
    line = f"{label}:"
    if geometry is not None:
        errors = verified_match_errors(database, geometry)
        line += f" {len(errors)} inlier matches, {100 * np.mean(errors > 1):.2f}% over 1 px off,"
    line += (
        f" {model.num_reg_images()} images, {model.num_points3D()} points,"
        f" track {model.compute_mean_track_length():.3f},"
        f" reprojection error {model.compute_mean_reprojection_error():.3f} px"
    )
    if gt is not None:
        auc = pose_auc(relative_pose_errors(model, gt), (1, 5))
        figures |= {"AUC@1": auc[1], "AUC@5": auc[5]}
        line += f", AUC@1 {auc[1]:.2f}, AUC@5 {auc[5]:.2f}"
    print(line, flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("compare_dir", type=Path)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--method", default="sift+msk")
    parser.add_argument("--max-error", type=float, help="verify the raw matches again with this RANSAC threshold (px)")
    parser.add_argument("--keep", default="all", help="all, shared, or a distance in px to the true geometry")
    parser.add_argument("--thin", type=float, help="then keep this share of each pair's inliers, drawn at random")
    parser.add_argument("--draws", type=int, default=10, help="how many times to --thin (seeds 0, 1, ...)")
    parser.add_argument("--reference", default="colmap-sift", help="the method whose verified matches `shared` keeps")
    parser.add_argument("--geometry", type=Path, help="a model to measure epipolar errors against (no AUC then)")
    args = parser.parse_args()
    report = json.loads((args.compare_dir / "report.json").read_text())
    gt = pycolmap.Reconstruction(Path(report["gt"])) if report.get("gt") else None
    geometry = pycolmap.Reconstruction(args.geometry) if args.geometry else gt
    if geometry is None and args.keep not in ("all", "shared"):
        parser.error("--keep PX needs the compare's ground truth or --geometry")
    if args.thin is not None and not 0 < args.thin <= 1:
        parser.error("--thin takes a share in (0, 1]")
    if args.draws < 1:
        parser.error("--draws takes a positive number")
    variant = f"max_error_{args.max_error}_keep_{args.keep}"
    work = args.work / args.compare_dir.name / args.method / variant
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    database = work / "database.db"
    shutil.copy(args.compare_dir / "runs" / args.method / "database.db", database)
    if args.max_error is not None:
        with open_database(database) as opened:
            opened.clear_two_view_geometries()
            pairs = select_pairs(report["pairs"], opened)
        verify_pairs(database, pairs, max_error=args.max_error)
    keep_inliers(database, args.keep, args.compare_dir / "runs" / args.reference / "database.db", geometry)
    label = f"{args.compare_dir.name} {args.method} {variant}"
    auc_truth = gt if args.geometry is None else None  # poses measured against one method's model favour it
    images = Path(report["images"])
    if args.thin is None:
        map_and_measure(database, images, label, geometry, auc_truth)
        return
    draws = []
    for draw in range(args.draws):
        thinned = work / f"thin_{args.thin}_draw_{draw}" / "database.db"
        thinned.parent.mkdir()
        shutil.copy(database, thinned)
        thin(thinned, args.thin, draw)
        draws.append(map_and_measure(thinned, images, f"{label} thin {args.thin} draw {draw}", geometry, auc_truth))
    summary = ", ".join(
        f"{name} {np.mean(values):.2f} ± {np.std(values, ddof=1 if len(values) > 1 else 0):.2f}"
        f" [{np.min(values):.2f}, {np.max(values):.2f}]"
        for name, values in ((name, [figures[name] for figures in draws]) for name in draws[0])
    )
    print(f"{label} thin {args.thin} over {args.draws} draws: {summary}", flush=True)


if __name__ == "__main__":
    main()
