"""`msk bench rotation`: does estimating orientations pay off? Upright vs oriented keypoints on rotated pairs.

The second image of every planar pair is turned in-plane by each angle (on a canvas large
enough to keep all of it, written as PNG under the output folder), its ground-truth homography
is composed with the turn, and each variant runs through the homography benchmark's
extraction, matching and metrics with the same keypoint budget.
"""

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pycolmap
import torch
from kornia.geometry.transform import warp_affine

from colmap_plugin.images import read_image

from . import plots
from .homography_bench import HomographyBenchConf, PlanarPair, bench_method, list_pairs
from .report import markdown_table, write_json


@dataclass(frozen=True)
class Variant:
    """A method with extractor options, e.g. msk with upright keypoints."""

    label: str
    method: str
    extractor_conf: dict[str, Any] = field(default_factory=dict)


DEFAULT_VARIANTS = (
    Variant("sift", "sift"),
    Variant("msk", "msk"),
    Variant("msk upright", "msk", {"upright": True}),
)


@dataclass
class RotationBenchConf:
    angles: tuple[float, ...] = (0, 15, 30, 45, 90, 180)  # degrees, counter-clockwise on screen
    variants: tuple[Variant, ...] = DEFAULT_VARIANTS
    homography: HomographyBenchConf = field(default_factory=HomographyBenchConf)


def rotation_matrix(size: tuple[int, int], degrees: float) -> tuple[np.ndarray, tuple[int, int]]:
    """The 3x3 map of centre-origin pixels of a (W, H) image turned by `degrees`, and the canvas size (W', H').

    The canvas is the turned image's bounding box, with the image centre at the canvas centre;
    multiples of 90 degrees map pixel centres onto pixel centres exactly.
    """
    width, height = size
    radians = math.radians(degrees)
    cos, sin = math.cos(radians), math.sin(radians)
    cos, sin = round(cos, 12), round(sin, 12)  # exact zeros at multiples of 90 degrees
    canvas = (
        math.ceil(abs(width * cos) + abs(height * sin) - 1e-9),
        math.ceil(abs(width * sin) + abs(height * cos) - 1e-9),
    )
    # Counter-clockwise on screen with y pointing down: (x, y) -> (x cos + y sin, -x sin + y cos).
    rotation = np.array([[cos, sin], [-sin, cos]])
    centre = (np.array(size) - 1) / 2
    new_centre = (np.array(canvas) - 1) / 2
    matrix = np.eye(3)
    matrix[:2, :2] = rotation
    matrix[:2, 2] = new_centre - rotation @ centre
    return matrix, canvas


def rotate_gray(image: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """A grey (H, W) uint8 image turned by `degrees` (bilinear, black outside), and the 3x3 map of its pixels."""
    matrix, (width, height) = rotation_matrix((image.shape[1], image.shape[0]), degrees)
    source = torch.from_numpy(image).float()[None, None]
    turned = warp_affine(
        source,
        torch.from_numpy(matrix[:2]).float()[None],
        (height, width),
        align_corners=True,
        padding_mode="zeros",
    )
    return turned[0, 0].round().clamp(0, 255).to(torch.uint8).numpy(), matrix


def rotated_pairs(pairs: list[PlanarPair], degrees: float, folder: Path) -> list[PlanarPair]:
    """The pairs with image B turned by `degrees` (PNG files in `folder`) and their homographies composed."""
    folder.mkdir(parents=True, exist_ok=True)
    turned = []
    for pair in pairs:
        path = folder / f"{pair.name}B.png"
        rotated, matrix = rotate_gray(read_image(pair.image1).gray, degrees)
        if not pycolmap.Bitmap.from_array(rotated).write(path):
            raise OSError(f"cannot write {path}")
        turned.append(PlanarPair(pair.name, pair.image0, path, matrix @ pair.homography))
    return turned


def bench_rotation(dataset_dir: Path, output_dir: Path, conf: RotationBenchConf = RotationBenchConf()) -> dict:
    """Every variant at every angle; writes report.json, report.md and mma_by_angle.png, returns the report."""
    dataset_dir, output_dir = Path(dataset_dir), Path(output_dir)
    pairs = list_pairs(dataset_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {variant.label: {} for variant in conf.variants}
    for degrees in conf.angles:
        turned = rotated_pairs(pairs, degrees, output_dir / "images" / f"{degrees:g}")
        for variant in conf.variants:
            print(f"[bench rotation] {variant.label} at {degrees:g} degrees", file=sys.stderr)
            summary, _ = bench_method(variant.method, turned, conf.homography, variant.extractor_conf)
            results[variant.label][f"{degrees:g}"] = {
                key: summary[key] for key in ("mma3", "correct_matches", "matches", "repeatability")
            }
    report = {
        "dataset": str(dataset_dir),
        "pairs": [pair.name for pair in pairs],
        "angles": list(conf.angles),
        "max_keypoints": conf.homography.max_keypoints,
        "max_size": conf.homography.max_size,
        "variants": {variant.label: {"method": variant.method, **variant.extractor_conf} for variant in conf.variants},
        "results": results,
    }
    plots.plot_curves(
        {
            label: (
                np.array(conf.angles, float),
                100 * np.array([by_angle[f"{a:g}"]["mma3"] for a in conf.angles]),
            )
            for label, by_angle in results.items()
        },
        "rotation of the second image (degrees)",
        "MMA@3px (%)",
        "Matching accuracy under in-plane rotation",
        output_dir / "mma_by_angle.png",
    )
    write_json(report, output_dir / "report.json")
    (output_dir / "report.md").write_text(markdown_report(report))
    return report


def rotation_table(report: dict[str, Any]) -> str:
    """Markdown table: a row per variant, a column per angle, cells MMA@3px / correct matches per pair."""
    angles = [f"{angle:g}" for angle in report["angles"]]
    rows = [
        [label] + [f"{by_angle[a]['mma3']:.1%} / {by_angle[a]['correct_matches']:.0f}" for a in angles]
        for label, by_angle in report["results"].items()
    ]
    return markdown_table(["variant", *(f"{a}°" for a in angles)], rows)


def markdown_report(report: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"# Rotation benchmark on {report['dataset']}",
            "",
            f"{len(report['pairs'])} pairs, image B turned in-plane; {report['max_keypoints']} keypoints at most per "
            "image. Cells: MMA@3px / correct matches per pair.",
            "",
            rotation_table(report),
            "",
            "![MMA by angle](mma_by_angle.png)",
        ]
    )
