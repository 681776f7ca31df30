"""Which keypoints carry a reconstruction's reprojection error? Observations binned by keypoint scale
and by how edge-like the keypoint is.

    .venv/bin/python scripts/reprojection_error_by_keypoint.py RUN [RUN ...] [--images DIR] [--max-size 1600]

RUN is a method's folder of an `msk compare` output (`runs/<method>`, holding database.db and
sparse/). Scales are in pixels of the files, as the database stores them. With --images (the folder
the run reconstructed, read at --max-size as extraction read it), the keypoints are also binned by
the ratio tr(H)^2 / det(H) of the spatial Hessian H of the scale-normalised LoG at the keypoint
(msk.refinement's responses): SIFT drops DoG extrema whose ratio is at least 12.1 (edge threshold
10), or whose Hessian is not that of a maximum ("not a blob" below).
"""

import argparse
import zlib  # noqa: F401  (before pycolmap: see colmap_plugin/__init__.py)
from pathlib import Path

import numpy as np
import pycolmap
import torch

from colmap_plugin.database import open_database
from colmap_plugin.images import read_image
from colmap_plugin.keypoints import rescale_colmap
from msk.data.patches import ImagePyramid, keypoint_scale
from msk.refinement import RefinementConf, log_responses, negative_hessian

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
                loaded = read_image(images / image.name, max_size)
                width_ratio, height_ratio = loaded.scale_xy
                extracted = rescale_colmap(keypoints[:, :2], (1 / width_ratio, 1 / height_ratio))
                ratios.append(edge_ratio(loaded.gray, extracted.astype(np.float32), scales[-1] / width_ratio))
    result = {"error": np.concatenate(errors), "scale": np.concatenate(scales)}
    if images is not None:
        result["ratio"] = np.concatenate(ratios)
    return result


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

    print(f"| {label} | keypoints | in the model | observations | mean / median error (px) | share of squared error |")
    print("| --- | --- | --- | --- | --- | --- |")
    for low, high in zip(edges[:-1], edges[1:]):
        name = f"[{low:g}, {high:g})" if np.isfinite(high) else f">= {low:g}"
        print(row(name, (found[key] >= low) & (found[key] < high)))
    if key == "ratio":
        print(row("not a blob", ~np.isfinite(found[key])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--images", type=Path, help="the images the runs reconstructed: also bin by edge ratio")
    parser.add_argument("--max-size", type=int, default=1600)
    args = parser.parse_args()
    torch.set_num_threads(2)
    for run in args.runs:
        found = observations(run, args.images, args.max_size)
        error = found["error"]
        print(f"\n{run}: {np.isfinite(error).sum()} observations, mean error {np.nanmean(error):.3f} px\n")
        binned(found, "scale", SCALE_EDGES, "scale (px of the files)")
        if "ratio" in found:
            print()
            binned(found, "ratio", RATIO_EDGES, "edge ratio tr² / det")


if __name__ == "__main__":
    main()
