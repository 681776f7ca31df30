"""`msk bench homography`: keypoints and matches of each method on planar pairs with known homographies.

Dataset layout: images/{name}A.*, images/{name}B.*, gt/{name}_H_AtoB.txt (x_B ~ H x_A in
pixel-centre coordinates). Every method extracts with the same keypoint budget, because
repeatability and match counts grow with the number of keypoints; matches come from the
method's default matcher. Output folder: report.json, report.md and PNG figures.
"""

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pycolmap
from tqdm import tqdm

from colmap_plugin.features import Extractor, Features, available_methods, create_extractor, extractor_class
from colmap_plugin.images import IMAGE_EXTENSIONS, read_image
from colmap_plugin.keypoints import colmap_to_pixel
from colmap_plugin.matchers import create_matcher

from . import plots
from .homography_metrics import (
    CORNER_THRESHOLDS,
    MMA_THRESHOLDS,
    corner_error,
    homography_accuracy,
    match_errors,
    mean_matching_accuracy,
    repeatability,
)
from .report import Row, finite_or_none, markdown_table, metrics_by_method_table, write_json

GT_SUFFIX = "_H_AtoB.txt"
TABLE_ROWS: list[Row] = [
    *((f"mma{t}", f"MMA@{t}px", "{:.1%}") for t in (1, 3, 5, 10)),
    ("correct_matches", "correct matches per pair (3 px)", "{:.0f}"),
    ("matches", "matches per pair", "{:.0f}"),
    ("repeatability", "repeatability (3 px)", "{:.1%}"),
    ("keypoints", "keypoints per image", "{:.0f}"),
    *((f"h_acc{t}", f"homography corner error ≤ {t}px", "{:.1%}") for t in CORNER_THRESHOLDS),
    ("time_extract_s", "time extract (s)", "{:.1f}"),
    ("time_match_s", "time match (s)", "{:.1f}"),
]


@dataclass
class HomographyBenchConf:
    methods: list[str] | None = None  # None: every available method
    max_size: int | None = 1600  # long side for extraction; keypoints are scaled back to full resolution
    max_keypoints: int = 2048  # the same budget for every method (the strongest by score are kept)
    correct_threshold: float = 3.0  # px, a correct match and a repeated keypoint
    ransac_max_error: float = 3.0  # px, homography estimation
    seed: int = 0
    match_pictures: int = 3


@dataclass
class PlanarPair:
    name: str
    image0: Path
    image1: Path
    homography: np.ndarray  # (3, 3), x1 ~ H x0


def list_pairs(dataset_dir: Path) -> list[PlanarPair]:
    """The pairs of a dataset folder, by name; a pair missing an image is an error."""
    dataset_dir = Path(dataset_dir)
    pairs = []
    for gt_path in sorted((dataset_dir / "gt").glob(f"*{GT_SUFFIX}")):
        name = gt_path.name[: -len(GT_SUFFIX)]
        images = []
        for side in "AB":
            found = [
                path
                for path in (dataset_dir / "images").glob(f"{name}{side}.*")
                if path.suffix.lower() in IMAGE_EXTENSIONS
            ]
            if len(found) != 1:
                raise FileNotFoundError(
                    f"expected one image {name}{side}.* in {dataset_dir / 'images'}, found {len(found)}"
                )
            images.append(found[0])
        pairs.append(PlanarPair(name, *images, np.loadtxt(gt_path).reshape(3, 3)))
    if not pairs:
        raise FileNotFoundError(f"no ground-truth homographies gt/*{GT_SUFFIX} in {dataset_dir}")
    return pairs


def strongest(features: Features, count: int) -> Features:
    """The `count` keypoints with the highest scores, in their original order.

    Ties go to the larger scale, as COLMAP's SIFT drops its finest scales first when over its
    cap: its keypoints all score the same and come finest first.
    """
    keep = np.sort(np.lexsort((-features.scales, -features.scores))[:count])
    return Features(
        keypoints=features.keypoints[keep],
        scales=features.scales[keep],
        orientations=features.orientations[keep],
        scores=features.scores[keep],
        descriptors=features.descriptors[keep],
    )


def extract(extractor: Extractor, path: Path, conf: HomographyBenchConf) -> tuple[Features, tuple[int, int]]:
    """Features of one image at full resolution (COLMAP coordinates), within the budget, and its size (W, H).

    The budget is enforced here too: extractors may exceed `max_keypoints` (COLMAP's SIFT
    caps per scale and adds second orientations after its cap).
    """
    image = read_image(path, conf.max_size)
    features = strongest(extractor.extract(image.gray), conf.max_keypoints)
    return features.rescaled(image.scale_xy), image.original_size


def evaluate_pair(
    pair: PlanarPair, features: tuple[Features, Features], sizes: tuple[tuple[int, int], tuple[int, int]],
    matches: np.ndarray, conf: HomographyBenchConf,
) -> dict[str, Any]:  # fmt: skip
    """Metrics of one pair and method; keypoints are COLMAP coordinates, matches (K, 2) indices."""
    points0 = colmap_to_pixel(features[0].keypoints.astype(np.float64))
    points1 = colmap_to_pixel(features[1].keypoints.astype(np.float64))
    matched0, matched1 = points0[matches[:, 0]], points1[matches[:, 1]]
    errors = match_errors(matched0, matched1, pair.homography)
    estimate = None
    if len(matches) >= 4:
        options = pycolmap.RANSACOptions()
        options.max_error = conf.ransac_max_error
        options.random_seed = conf.seed
        result = pycolmap.estimate_homography_matrix(matched0, matched1, options)
        estimate = None if result is None else result["H"]
    return {
        "keypoints": (len(points0) + len(points1)) / 2,
        "matches": len(matches),
        "correct_matches": int(np.sum(errors <= conf.correct_threshold)),
        **{f"mma{t}": value for t, value in mean_matching_accuracy(errors).items()},
        "repeatability": repeatability(points0, points1, pair.homography, *sizes, conf.correct_threshold),
        "corner_error": corner_error(estimate, pair.homography, sizes[0]),
        "correct": errors <= conf.correct_threshold,  # (K,), for the match pictures; dropped from the JSON
    }


def bench_method(
    method: str, pairs: list[PlanarPair], conf: HomographyBenchConf, extractor_conf: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per-pair results and the keypoints and matches of each pair (for pictures) of one method.

    `extractor_conf`: options of the method's extractor besides the keypoint budget (e.g. upright).
    """
    extractor = create_extractor(method, **(extractor_conf or {}), max_keypoints=conf.max_keypoints)
    matcher = create_matcher(extractor_class(method).default_matcher)
    seconds = {"extract": 0.0, "match": 0.0}
    per_pair, drawn = {}, {}
    for pair in tqdm(pairs, desc=f"homography ({method})", unit="pair"):
        start = time.perf_counter()
        (features0, size0), (features1, size1) = (extract(extractor, path, conf) for path in (pair.image0, pair.image1))
        seconds["extract"] += time.perf_counter() - start
        start = time.perf_counter()
        matches, _ = matcher.match(features0, features1)
        seconds["match"] += time.perf_counter() - start
        results = evaluate_pair(pair, (features0, features1), (size0, size1), matches, conf)
        drawn[pair.name] = (
            features0.keypoints[matches[:, 0]],
            features1.keypoints[matches[:, 1]],
            results.pop("correct"),
        )
        per_pair[pair.name] = results
    return summarize(per_pair, seconds), drawn


def summarize(per_pair: dict[str, dict[str, Any]], seconds: dict[str, float]) -> dict[str, Any]:
    """Means over pairs (MMA per pair, then averaged), homography accuracy, times, and the per-pair values."""
    values = list(per_pair.values())
    repeatabilities = [value["repeatability"] for value in values if value["repeatability"] is not None]
    corner_errors = np.array([value["corner_error"] for value in values])
    return {
        **{f"mma{t}": float(np.mean([value[f"mma{t}"] for value in values])) for t in MMA_THRESHOLDS},
        "correct_matches": float(np.mean([value["correct_matches"] for value in values])),
        "matches": float(np.mean([value["matches"] for value in values])),
        "repeatability": float(np.mean(repeatabilities)) if repeatabilities else None,
        "keypoints": float(np.mean([value["keypoints"] for value in values])),
        **{f"h_acc{t}": value for t, value in homography_accuracy(corner_errors).items()},
        "time_extract_s": seconds["extract"],
        "time_match_s": seconds["match"],
        "pairs": {
            name: {**value, "corner_error": finite_or_none(value["corner_error"])} for name, value in per_pair.items()
        },
    }


def markdown_report(report: dict[str, Any], figures: list[str]) -> str:
    methods = report["methods"]
    per_pair = markdown_table(
        ["pair", *(f"{name}: correct / matches, corner error (px)" for name in methods)],
        [
            [pair]
            + [
                f"{results['pairs'][pair]['correct_matches']} / {results['pairs'][pair]['matches']}, "
                + (
                    "–"
                    if results["pairs"][pair]["corner_error"] is None
                    else f"{results['pairs'][pair]['corner_error']:.1f}"
                )
                for results in methods.values()
            ]
            for pair in report["pairs"]
        ],
    )
    lines = [
        f"# Homography benchmark on {report['dataset']}",
        "",
        f"{len(report['pairs'])} pairs, {report['max_keypoints']} keypoints at most per image, max size "
        f"{report['max_size']}; correct: within {report['correct_threshold']} px under the true homography. "
        "The corner error depends much on how much of the images overlap: read MMA and correct matches first.",
        "",
        metrics_by_method_table(methods, TABLE_ROWS),
        *(f"![{figure}]({figure})" for figure in figures),
        "",
        "## Per pair",
        "",
        per_pair,
    ]
    return "\n".join(lines)


def plot_report(
    report: dict[str, Any], drawn: dict[str, dict[str, Any]], pairs: list[PlanarPair], output_dir: Path, count: int
) -> list[str]:
    """MMA curves, correct matches per pair, stage times and a few pairs' matches; returns the file names."""
    methods = report["methods"]
    thresholds = np.array(MMA_THRESHOLDS, dtype=float)
    plots.plot_curves(
        {
            name: (thresholds, 100 * np.array([results[f"mma{t}"] for t in MMA_THRESHOLDS]))
            for name, results in methods.items()
        },
        "threshold (px)",
        "correct matches (%)",
        "Mean matching accuracy",
        output_dir / "mma.png",
    )
    names = [pair.name for pair in pairs]
    plots.plot_grouped_bars(
        {
            name: np.array([results["pairs"][pair]["correct_matches"] for pair in names])
            for name, results in methods.items()
        },
        names,
        "correct matches (3 px)",
        "Correct matches per pair",
        output_dir / "correct_matches.png",
    )
    plots.plot_stage_times(
        {
            name: {"extract": results["time_extract_s"], "match": results["time_match_s"]}
            for name, results in methods.items()
        },
        ("extract", "match"),
        output_dir / "times.png",
    )
    figures = ["mma.png", "correct_matches.png", "times.png"]
    best = {pair: max(results["pairs"][pair]["correct_matches"] for results in methods.values()) for pair in names}
    by_name = {pair.name: pair for pair in pairs}
    for index, name in enumerate(plots.pairs_to_draw(best, count)):
        rows = [(method, *drawn[method][name]) for method in methods]
        filename = f"matches_{index}.png"
        plots.plot_match_pairs(
            (by_name[name].image0, by_name[name].image1),
            rows,
            f"{name}: matches (green: within 3 px)",
            output_dir / filename,
        )
        figures.append(filename)
    return figures


def bench_homography(
    dataset_dir: Path, output_dir: Path, conf: HomographyBenchConf = HomographyBenchConf()
) -> dict[str, Any]:
    """Run every method on every pair and write report.json, report.md and the figures; returns the report."""
    dataset_dir, output_dir = Path(dataset_dir), Path(output_dir)
    pairs = list_pairs(dataset_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    methods, drawn = {}, {}
    for method in conf.methods or available_methods():
        print(f"[bench homography] {method}", file=sys.stderr)
        methods[method], drawn[method] = bench_method(method, pairs, conf)
    report = {
        "dataset": str(dataset_dir),
        "pairs": [pair.name for pair in pairs],
        "max_size": conf.max_size,
        "max_keypoints": conf.max_keypoints,
        "correct_threshold": conf.correct_threshold,
        "ransac_max_error": conf.ransac_max_error,
        "methods": methods,
    }
    figures = plot_report(report, drawn, pairs, output_dir, conf.match_pictures)
    write_json(report, output_dir / "report.json")
    (output_dir / "report.md").write_text(markdown_report(report, figures))
    return report
