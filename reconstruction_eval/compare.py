"""`msk compare`: COLMAP's SIFT and plugin methods on the same images, pairs and mapper, side by side.

Output folder: report.json, report.md, PNG figures, and runs/<method>/ with each method's
database and sparse model.
"""

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pycolmap

from colmap_plugin.features import available_methods
from colmap_plugin.images import list_images

from . import plots
from .metrics import (
    POSE_THRESHOLDS,
    camera_center_errors,
    epipolar_errors,
    pose_auc,
    pose_auc_difference_interval,
    registered_poses,
    relative_pose_errors,
)
from .report import Row, finite_or_none, metrics_by_method_table, write_json
from .runs import REFERENCE, STAGES, MethodRun, RunConf, run_plugin, run_reference
from .statistics import (
    database_statistics,
    keypoint_positions,
    model_statistics,
    observations_per_image,
    track_lengths,
    verified_pairs,
)

# Pose AUC differences from the reference come with an interval: a few tenths of a point on one scene
# are often no difference at all (`metrics.pose_auc_difference_interval`).
DIFFERENCE_THRESHOLDS = (1, 5)
DIFFERENCE = "{0[0]:+.2f} [{0[1]:+.2f}, {0[2]:+.2f}]"  # [difference, low, high]
TABLE_ROWS: list[Row] = [
    ("registered", "registered images", "{:d}"),
    ("points3D", "3D points", "{:d}"),
    ("track_length", "mean track length", "{:.2f}"),
    ("images_per_point", "mean images per 3D point", "{:.2f}"),
    ("obs_per_image", "observations per image", "{:.0f}"),
    ("reproj_error", "mean reprojection error (px)", "{:.3f}"),
    ("keypoints_per_image", "keypoints per image", "{:.0f}"),
    ("verified_pairs", "verified pairs", "{:d}"),
    ("inlier_matches", "inlier matches", "{:d}"),
    ("match_error_median", "inlier matches: median epipolar error under GT (px)", "{:.3f}"),
    ("match_error_over_1px", "inlier matches over 1 px off GT epipolar geometry (%)", "{:.1f}"),
    *((f"auc{t}", f"pose AUC@{t}° (%)", "{:.1f}") for t in POSE_THRESHOLDS),
    *(
        (f"auc{t}_vs_reference", f"pose AUC@{t}° minus {REFERENCE}'s, 95% interval (images resampled)", DIFFERENCE)
        for t in DIFFERENCE_THRESHOLDS
    ),
    ("center_error_median", "median camera-centre error (GT units)", "{:.4f}"),
    *((f"time_{stage}_s", f"time {stage} (s)", "{:.1f}") for stage in STAGES),
    ("time_total_s", "time total (s)", "{:.1f}"),
]
POSE_ERROR_RANGE = (0.01, 180.0)  # degrees, x axis of the pose-error plot


@dataclass
class CompareConf:
    methods: list[str] | None = None  # plugin methods; None: every available one
    run: RunConf = field(default_factory=RunConf)
    match_pictures: int = 3  # pairs drawn with each method's inliers
    # Every method takes its cameras from the ground truth and the mapper keeps them: pose accuracy
    # then measures the features alone, not how well each method's matches calibrate the cameras.
    gt_intrinsics: bool = False


class GroundTruthError(ValueError):
    """The ground-truth model cannot score these images; the message says why."""


def restricted_to(gt: pycolmap.Reconstruction, names: list[str]) -> pycolmap.Reconstruction:
    """A copy of `gt` whose registered images are only those in `names` (the images compared)."""
    gt = pycolmap.Reconstruction(gt)
    wanted = set(names)
    for image in list(gt.images.values()):
        if image.has_pose and image.name not in wanted:
            gt.deregister_frame(image.frame_id)
    return gt


def evaluate_run(run: MethodRun, gt: pycolmap.Reconstruction | None) -> dict[str, Any]:
    """The report entry of one method: statistics, ground-truth accuracy if given, stage times."""
    results: dict[str, Any] = {**database_statistics(run.database), **model_statistics(run.model)}
    if gt is not None:
        model = run.model if run.model is not None else pycolmap.Reconstruction()
        errors = relative_pose_errors(model, gt)
        results.update({f"auc{t}": auc for t, auc in pose_auc(errors).items()})
        centers = camera_center_errors(model, gt)
        finite = centers[np.isfinite(centers)]
        results["center_error_median"] = float(np.median(finite)) if len(finite) else None
        results["pose_errors"] = errors.round(4).tolist()  # per GT pair, sorted names
        match_errors = verified_match_errors(run.database, gt)
        results["match_error_median"] = float(np.median(match_errors)) if len(match_errors) else None
        results["match_error_over_1px"] = 100 * float(np.mean(match_errors > 1)) if len(match_errors) else None
        results["center_errors"] = [finite_or_none(value) for value in centers]  # per GT image, sorted names
    results.update({f"time_{stage}_s": run.seconds.get(stage, 0.0) for stage in STAGES})
    results["time_total_s"] = sum(run.seconds.values())
    results["error"] = run.error
    return results


def add_reference_differences(methods: dict[str, dict[str, Any]]) -> None:
    """Give every method's results its pose AUC differences from the reference's, with their intervals
    (`auc<t>_vs_reference`: [difference, low, high]; None for the reference itself)."""
    reference = methods[REFERENCE]["pose_errors"]
    for name, results in methods.items():
        if name == REFERENCE:
            differences = dict.fromkeys(DIFFERENCE_THRESHOLDS)
        else:
            intervals = pose_auc_difference_interval(results["pose_errors"], reference, DIFFERENCE_THRESHOLDS)
            differences = {t: list(interval) for t, interval in intervals.items()}
        results.update({f"auc{t}_vs_reference": differences[t] for t in DIFFERENCE_THRESHOLDS})


def verified_match_errors(database_path: Path, gt: pycolmap.Reconstruction) -> np.ndarray:
    """Epipolar errors (K,) in pixels (`metrics.epipolar_errors`) of the verified inlier matches between GT images.

    How precisely a method's matches land, whatever the mapper later keeps: near misses (the right
    spot give or take a pixel or two) pass COLMAP's 4 px verification and then pull on the poses.
    """
    truth = registered_poses(gt)
    keypoints = keypoint_positions(database_path)
    errors = [
        epipolar_errors(gt, name0, name1, keypoints[name0][matches[:, 0]], keypoints[name1][matches[:, 1]])
        for (name0, name1), matches in verified_pairs(database_path).items()
        if name0 in truth and name1 in truth
    ]
    return np.concatenate(errors) if errors else np.zeros(0)


def run_methods(image_dir: Path, output_dir: Path, conf: CompareConf) -> tuple[list[MethodRun], list[tuple[str, str]]]:
    """The reference first (it chooses the pairs), then each plugin method on the same pairs."""
    runs_dir = Path(output_dir) / "runs"
    print(f"[compare] {REFERENCE}", file=sys.stderr)
    reference, pairs = run_reference(image_dir, runs_dir / REFERENCE, conf.run)
    runs = [reference]
    for method in conf.methods or available_methods():
        print(f"[compare] {method}", file=sys.stderr)
        runs.append(run_plugin(method, image_dir, runs_dir / method, pairs, conf.run))
    return runs, pairs


def plot_runs(
    runs: list[MethodRun], report: dict[str, Any], image_dir: Path, output_dir: Path, conf: CompareConf
) -> list[str]:
    """Write the figures; returns their file names."""
    methods = report["methods"]
    names = list_images(image_dir)
    figures = []
    if report["gt"] is not None:
        # Log scale: good methods differ below 1 degree, failures sit at 180.
        thresholds = np.geomspace(*POSE_ERROR_RANGE, 400)
        curves = {
            f"{name} (AUC@5° {results['auc5']:.1f})": plots.recall_curve(np.asarray(results["pose_errors"]), thresholds)
            for name, results in methods.items()
        }
        plots.plot_curves(
            curves,
            "relative pose error (°), log scale",
            "image pairs with a smaller error (%)",
            "Relative pose error over all image pairs (unregistered: 180°)",
            output_dir / "pose_errors.png",
            marks=POSE_THRESHOLDS,
            log_x=True,
        )
        figures.append("pose_errors.png")
    lengths = {run.name: track_lengths(run.model) for run in runs}
    longest = max([2, *(int(values.max()) for values in lengths.values() if len(values))])
    plots.plot_grouped_bars(
        {name: np.bincount(values, minlength=longest + 1)[2:] for name, values in lengths.items()},
        [str(length) for length in range(2, longest + 1)],
        "3D points",
        "Track lengths (images per 3D point)",
        output_dir / "track_lengths.png",
    )
    figures.append("track_lengths.png")
    plots.plot_grouped_bars(
        {run.name: observations_per_image(run.model, names) for run in runs},
        [Path(name).stem for name in names],
        "observations of 3D points",
        "Registered observations per image (0: not registered)",
        output_dir / "observations_per_image.png",
    )
    figures.append("observations_per_image.png")
    plots.plot_stage_times({run.name: run.seconds for run in runs}, STAGES, output_dir / "times.png")
    figures.append("times.png")
    figures += plot_inliers(runs, image_dir, output_dir, conf.match_pictures)
    return figures


def plot_inliers(runs: list[MethodRun], image_dir: Path, output_dir: Path, count: int) -> list[str]:
    """Verified inliers of each method over a few pairs, from the hardest to the easiest."""
    inliers = {run.name: verified_pairs(run.database) for run in runs}
    best = {
        pair: max(len(pairs.get(pair, ())) for pairs in inliers.values())
        for pairs in inliers.values()
        for pair in pairs
    }
    keypoints = {run.name: keypoint_positions(run.database) for run in runs}
    figures = []
    for index, (name0, name1) in enumerate(plots.pairs_to_draw(best, count)):
        rows = []
        for run in runs:
            matches = inliers[run.name].get((name0, name1), np.zeros((0, 2), np.int64))
            rows.append(
                (run.name, keypoints[run.name][name0][matches[:, 0]], keypoints[run.name][name1][matches[:, 1]], None)
            )
        filename = f"matches_{index}.png"
        plots.plot_match_pairs(
            (image_dir / name0, image_dir / name1), rows, f"Verified inliers: {name0} – {name1}", output_dir / filename
        )
        figures.append(filename)
    return figures


def markdown_report(report: dict[str, Any], figures: list[str]) -> str:
    lines = [
        f"# Comparison on {report['images']}",
        "",
        f"{report['num_images']} images, {report['num_pairs']} pairs ({report['pairs']}), {report['mapper']} mapper, "
        f"camera mode {report['camera_mode']}, intrinsics {report['intrinsics']}, "
        f"max size {report['max_size']}, pycolmap {report['pycolmap']}."
        + (f" Ground truth: {report['gt']} ({report['gt_images']} images)." if report["gt"] else ""),
        "",
        metrics_by_method_table(report["methods"], TABLE_ROWS),
    ]
    lines += [f"![{figure}]({figure})" for figure in figures]
    failed = {name: results["error"] for name, results in report["methods"].items() if results["error"]}
    lines += [f"\n**{name}** built no model: {error}" for name, error in failed.items()]
    return "\n".join(lines) + "\n"


def compare(
    image_dir: Path, output_dir: Path, gt_dir: Path | None = None, conf: CompareConf = CompareConf()
) -> dict[str, Any]:
    """Run every method, evaluate, and write report.json, report.md and the figures; returns the report."""
    if conf.gt_intrinsics and gt_dir is None:
        raise GroundTruthError("--gt-intrinsics needs the ground truth (--gt)")
    image_dir, output_dir = Path(image_dir), Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    names = list_images(image_dir)
    if not names:
        raise FileNotFoundError(f"no images in {image_dir}")
    gt = restricted_to(pycolmap.Reconstruction(Path(gt_dir)), names) if gt_dir is not None else None
    if gt is not None and gt.num_reg_images() < 2:
        raise GroundTruthError(f"the ground truth {gt_dir} has fewer than 2 images named as in {image_dir}")
    if conf.gt_intrinsics:
        missing = sorted(set(names) - {image.name for image in gt.images.values()})
        if missing:
            raise GroundTruthError(f"--gt-intrinsics: the ground truth {gt_dir} has no camera for {missing[0]}")
        conf = replace(conf, run=replace(conf.run, cameras_from=Path(gt_dir)))
    runs, pairs = run_methods(image_dir, output_dir, conf)
    report = {
        "images": str(image_dir),
        "num_images": len(names),
        "gt": None if gt is None else str(gt_dir),
        "gt_images": None if gt is None else gt.num_reg_images(),
        "pairs": conf.run.pairs,
        "num_pairs": len(pairs),
        "mapper": conf.run.mapper,
        "camera_mode": conf.run.camera_mode,
        "intrinsics": "ground truth, fixed" if conf.gt_intrinsics else "estimated",
        "max_size": conf.run.max_size,
        "seed": conf.run.seed,
        "pycolmap": pycolmap.__version__,
        "methods": {run.name: evaluate_run(run, gt) for run in runs},
    }
    if gt is not None:
        add_reference_differences(report["methods"])
    figures = plot_runs(runs, report, image_dir, output_dir, conf)
    write_json(report, output_dir / "report.json")
    (output_dir / "report.md").write_text(markdown_report(report, figures))
    return report
