"""Which keypoints carry a reconstruction's reprojection error? Observations binned by keypoint scale
and by how edge-like the keypoint is; with --gt, the verified matches' error under the true geometry too.

    .venv/bin/python scripts/reprojection_error_by_keypoint.py RUN [RUN ...] [--images DIR] [--max-size 1600] [--gt GT]

RUN is a method's folder of an `msk compare` output (`runs/<method>`, holding database.db and
sparse/). Scales are in pixels of the files, as the database stores them. With --images (the folder
the run reconstructed, read at --max-size as extraction read it), the keypoints are also binned by
the ratio tr(H)^2 / det(H) of the spatial Hessian H of the scale-normalised LoG at the keypoint
(msk.refinement's responses): SIFT drops DoG extrema whose ratio is at least 12.1 (edge threshold
10), or whose Hessian is not that of a maximum ("not a blob" below).

With --gt (the scene's ground-truth COLMAP model), every verified inlier match between ground-truth
images is binned the same way, by the larger scale and the larger edge ratio of its two keypoints,
with its epipolar error under the true cameras (`reconstruction_eval.metrics.epipolar_errors`, as
`msk compare --gt` reports it): which keypoints the near misses (over 1 px) come from, before the
mapper keeps or drops them.
"""

import argparse
import zlib  # noqa: F401  (before pycolmap: see colmap_plugin/__init__.py)
from pathlib import Path
from typing import Callable

import numpy as np
import pycolmap
import torch

from colmap_plugin.database import open_database
from colmap_plugin.images import read_image
from colmap_plugin.keypoints import rescale_colmap
from msk.data.patches import ImagePyramid, keypoint_scale
from msk.refinement import RefinementConf, log_responses, negative_hessian
from reconstruction_eval.metrics import epipolar_errors
from reconstruction_eval.statistics import verified_pairs

SCALE_EDGES = (0, 1.5, 2, 3, 4, 6, 8, 12, 16, np.inf)
RATIO_EDGES = (4, 6, 8, 10, 12.1, 20, np.inf)  # tr^2 / det >= 4 for every maximum; 12.1: SIFT's edge threshold


def keypoint_scales(keypoints: np.ndarray) -> np.ndarray:
    """Scales (N,) of COLMAP keypoints (N, 4) [x, y, scale, orientation] or (N, 6) [x, y, a11, a12, a21, a22]."""
    return keypoints[:, 2] if keypoints.shape[1] == 4 else keypoint_scale(keypoints)


def edge_ratio(image: np.ndarray, keypoints: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """tr(H)^2 / det(H) (N,) of the LoG's spatial Hessian at COLMAP keypoints (N, 2) with scales (N,) in
    a grey image; inf where H is not that of an extremum of the sign found at the keypoint."""
    conf = RefinementConf()
    mid = conf.radius + 1
    responses = log_responses(ImagePyramid(image), torch.from_numpy(keypoints), torch.from_numpy(scales), conf)
    around = responses[:, :, mid - 1 : mid + 2, mid - 1 : mid + 2]  # (N, 3, 3, 3) around the keypoint
    around = around * torch.sign(around[:, 1, 1, 1])[:, None, None, None]
    xx, yy, _, xy, _, _ = negative_hessian(around)
    determinant = xx * yy - xy**2
    ratio = (xx + yy) ** 2 / determinant
    return torch.where((determinant > 0) & (xx > 0), ratio, torch.full_like(ratio, torch.inf)).numpy()


def image_edge_ratios(images: Path, name: str, keypoints: np.ndarray, max_size: int) -> np.ndarray:
    """Edge ratios (N,) of an image's COLMAP keypoints (N, 4 or 6) as stored, the image read as extraction read it."""
    loaded = read_image(images / name, max_size)
    width_ratio, height_ratio = loaded.scale_xy
    extracted = rescale_colmap(keypoints[:, :2], (1 / width_ratio, 1 / height_ratio))
    return edge_ratio(loaded.gray, extracted.astype(np.float32), keypoint_scales(keypoints) / width_ratio)


def observations(run: Path, images: Path | None, max_size: int) -> dict[str, np.ndarray]:
    """Per keypoint of every registered image: reprojection error (NaN if not in the model), scale, edge ratio."""
    model = pycolmap.Reconstruction(run / "sparse")
    errors, scales, ratios = [], [], []
    with open_database(run / "database.db") as database:
        for image in model.images.values():
            keypoints = database.read_keypoints(image.image_id)
            error = np.full(len(keypoints), np.nan)
            seen = [(index, point) for index, point in enumerate(image.points2D) if point.has_point3D()]
            if seen:
                index = np.array([i for i, _ in seen])
                world = np.array([model.points3D[point.point3D_id].xyz for _, point in seen])
                projected = model.cameras[image.camera_id].img_from_cam(image.cam_from_world() * world)
                error[index] = np.linalg.norm(projected - np.array([point.xy for _, point in seen]), axis=1)
            errors.append(error)
            scales.append(keypoint_scales(keypoints))
            if images is not None:
                ratios.append(image_edge_ratios(images, image.name, keypoints, max_size))
    result = {"error": np.concatenate(errors), "scale": np.concatenate(scales)}
    if images is not None:
        result["ratio"] = np.concatenate(ratios)
    return result


def verified_matches(
    run: Path, gt: pycolmap.Reconstruction, images: Path | None, max_size: int
) -> dict[str, np.ndarray]:
    """Per verified inlier match between ground-truth images: epipolar error, larger scale and edge ratio of
    its two keypoints."""
    with open_database(run / "database.db") as database:
        keypoints = {image.name: database.read_keypoints(image.image_id) for image in database.read_all_images()}
    truth = {image.name for image in gt.images.values() if image.has_pose}
    pairs = {pair: matches for pair, matches in verified_pairs(run / "database.db").items() if set(pair) <= truth}
    names = sorted({name for pair in pairs for name in pair})
    scales = {name: keypoint_scales(keypoints[name]) for name in names}
    ratios = {name: image_edge_ratios(images, name, keypoints[name], max_size) for name in names} if images else None
    found = {"error": [], "scale": [], "ratio": []}
    for (name0, name1), matches in pairs.items():
        index0, index1 = matches[:, 0], matches[:, 1]
        found["error"].append(
            epipolar_errors(gt, name0, name1, keypoints[name0][index0, :2], keypoints[name1][index1, :2])
        )
        found["scale"].append(np.maximum(scales[name0][index0], scales[name1][index1]))
        if ratios is not None:
            found["ratio"].append(np.maximum(ratios[name0][index0], ratios[name1][index1]))
    return {key: np.concatenate(values) for key, values in found.items() if values}


def print_bins(
    values: np.ndarray,
    edges: tuple[float, ...],
    label: str,
    columns: list[str],
    row: Callable[[str, np.ndarray], str],
    with_non_blobs: bool,
) -> None:
    """A markdown table with a line `row(name, inside)` per bin of `values` (N,), inside (N,) its members;
    with_non_blobs: a last line for the infinite values (edge ratios of keypoints that are not blobs)."""
    print(f"| {label} | {' | '.join(columns)} |")
    print("| --- " * (len(columns) + 1) + "|")
    for low, high in zip(edges[:-1], edges[1:]):
        name = f"[{low:g}, {high:g})" if np.isfinite(high) else f">= {low:g}"
        print(row(name, (values >= low) & (values < high)))
    if with_non_blobs:
        print(row("not a blob", ~np.isfinite(values)))


def binned_matches(found: dict[str, np.ndarray], key: str, edges: tuple[float, ...], label: str) -> None:
    """A markdown table of the verified matches in each bin of found[key] and their epipolar errors."""
    error = found["error"]
    off = error > 1

    def row(name: str, inside: np.ndarray) -> str:
        if not inside.any():
            return f"| {name} | 0 | - | - | - |"
        return (
            f"| {name} | {inside.mean():.1%} | {np.median(error[inside]):.3f} | {off[inside].mean():.1%} | "
            f"{off[inside].sum() / max(off.sum(), 1):.1%} |"
        )

    columns = ["matches", "median epipolar error (px)", "over 1 px", "share of those over 1 px"]
    print_bins(found[key], edges, label, columns, row, with_non_blobs=key == "ratio")


def binned(found: dict[str, np.ndarray], key: str, edges: tuple[float, ...], label: str) -> None:
    """A markdown table of the keypoints and observations in each bin of found[key]; for the edge ratio also
    the keypoints that are not blobs (inf)."""
    error = found["error"]
    tracked = ~np.isnan(error)
    squared_total = np.nansum(error**2)

    def row(name: str, inside: np.ndarray) -> str:
        errors = error[inside & tracked]
        if len(errors) == 0:
            return f"| {name} | {inside.mean():.1%} | 0 | 0 | - | - |"
        return (
            f"| {name} | {inside.mean():.1%} | {len(errors) / inside.sum():.1%} | {len(errors) / tracked.sum():.1%} | "
            f"{errors.mean():.3f} / {np.median(errors):.3f} | {(errors**2).sum() / squared_total:.1%} |"
        )

    columns = ["keypoints", "in the model", "observations", "mean / median error (px)", "share of squared error"]
    print_bins(found[key], edges, label, columns, row, with_non_blobs=key == "ratio")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--images", type=Path, help="the images the runs reconstructed: also bin by edge ratio")
    parser.add_argument("--max-size", type=int, default=1600)
    parser.add_argument("--gt", type=Path, help="the scene's ground-truth model: also bin the verified matches")
    args = parser.parse_args()
    gt = pycolmap.Reconstruction(args.gt) if args.gt else None
    torch.set_num_threads(2)
    for run in args.runs:
        found = observations(run, args.images, args.max_size)
        error = found["error"]
        print(f"\n{run}: {np.isfinite(error).sum()} observations, mean error {np.nanmean(error):.3f} px\n")
        binned(found, "scale", SCALE_EDGES, "scale (px of the files)")
        if "ratio" in found:
            print()
            binned(found, "ratio", RATIO_EDGES, "edge ratio tr² / det")
        if gt is not None:
            matches = verified_matches(run, gt, args.images, args.max_size)
            print(
                f"\nverified inlier matches: {len(matches['error'])}, {np.mean(matches['error'] > 1):.1%} over 1 px\n"
            )
            binned_matches(matches, "scale", SCALE_EDGES, "larger scale (px of the files)")
            if "ratio" in matches:
                print()
                binned_matches(matches, "ratio", RATIO_EDGES, "larger edge ratio")


if __name__ == "__main__":
    main()
