"""`msk bench scenes`: `compare` on every scene of a folder, and one summary table.

A scene is a sub-folder with `images/`; its `gt/` model, when present, is the ground truth.
Output folder: one compare output per scene, plus report.json, report.md and a summary figure.
"""

import sys
from pathlib import Path
from typing import Any

import numpy as np

from . import plots
from .compare import DIFFERENCE, DIFFERENCE_THRESHOLDS, CompareConf, compare
from .metrics import POSE_THRESHOLDS
from .report import format_value, markdown_table, write_json
from .runs import REFERENCE

SUMMARY_COLUMNS = [
    ("points3D", "3D points", "{:d}"),
    ("track_length", "track length", "{:.2f}"),
    ("reproj_error", "reproj. error (px)", "{:.3f}"),
    *((f"auc{t}", f"AUC@{t}° (%)", "{:.1f}") for t in POSE_THRESHOLDS),
    *((f"auc{t}_vs_reference", f"AUC@{t}° minus {REFERENCE}'s [95%]", DIFFERENCE) for t in DIFFERENCE_THRESHOLDS),
    ("time_total_s", "time (s)", "{:.1f}"),
]
PER_PAIR_KEYS = ("pose_errors", "center_errors")  # long lists: left in each scene's own report


def find_scenes(scenes_dir: Path) -> list[Path]:
    """Sub-folders holding an `images/` folder, by name."""
    scenes = sorted(path for path in Path(scenes_dir).iterdir() if (path / "images").is_dir())
    if not scenes:
        raise FileNotFoundError(f"no scenes (sub-folders with images/) in {scenes_dir}")
    return scenes


def summary_table(scenes: dict[str, dict[str, Any]]) -> str:
    rows = []
    for scene, report in scenes.items():
        for method, results in report["methods"].items():
            rows.append(
                [scene, method, f"{results['registered']} / {report['num_images']}"]
                + [format_value(results.get(key), spec) for key, _, spec in SUMMARY_COLUMNS]
            )
    return markdown_table(["scene", "method", "registered", *(label for _, label, _ in SUMMARY_COLUMNS)], rows)


def bench_scenes(scenes_dir: Path, output_dir: Path, conf: CompareConf = CompareConf()) -> dict[str, Any]:
    """Compare the methods on each scene; write the summary and return it (scene -> compare report)."""
    output_dir = Path(output_dir)
    scenes = {}
    for scene in find_scenes(scenes_dir):
        print(f"[bench scenes] {scene.name}", file=sys.stderr)
        gt = scene / "gt" if (scene / "gt").is_dir() else None
        report = compare(scene / "images", output_dir / scene.name, gt, conf)
        for results in report["methods"].values():
            for key in PER_PAIR_KEYS:
                results.pop(key, None)
        scenes[scene.name] = report
    summary = {"scenes_dir": str(scenes_dir), "scenes": scenes}
    write_json(summary, output_dir / "report.json")

    with_gt = [name for name, report in scenes.items() if report["gt"] is not None]
    methods = list(next(iter(scenes.values()))["methods"])
    if with_gt:
        key, label, figure = "auc5", "pose AUC@5° (%)", "auc5.png"
        values = {method: np.array([scenes[name]["methods"][method][key] for name in with_gt]) for method in methods}
        labels = with_gt
    else:
        key, label, figure = "registered", "registered images (%)", "registered.png"
        values = {
            method: np.array([100 * r["methods"][method]["registered"] / r["num_images"] for r in scenes.values()])
            for method in methods
        }
        labels = list(scenes)
    plots.plot_grouped_bars(values, labels, label, f"{label} per scene", output_dir / figure)
    lines = [
        f"# Scenes in {scenes_dir}",
        "",
        summary_table(scenes),
        f"![{figure}]({figure})",
        "",
        *(f"- [{name}]({name}/report.md)" for name in scenes),
    ]
    (output_dir / "report.md").write_text("\n".join(lines) + "\n")
    return summary
