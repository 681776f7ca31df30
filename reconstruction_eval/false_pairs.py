"""`msk bench false-pairs`: how many pairs of views that cannot overlap pass geometric verification.

The images of two different scenes go into one folder (`a/...`, `b/...`), so every pair across
the scenes is false. COLMAP's SIFT and each plugin method run on it exactly as in `msk compare`
(same exhaustive pairs, verification and mapper). Per method: raw matches per false pair, false
pairs verified (usable geometry with COLMAP's minimum of inliers) and their inliers, true pairs
verified for contrast, and how many images of each scene the largest model holds: a model that
holds both scenes was glued together by false pairs.
"""

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pycolmap

from colmap_plugin.database import open_database
from colmap_plugin.images import list_images

from .compare import CompareConf, run_methods
from .report import metrics_by_method_table, write_json
from .runs import MethodRun, RunConf, link_images
from .statistics import verified_pairs

SCENES = ("a", "b")  # sub-folders of the mixed image folder

TABLE_ROWS = [
    ("false_pairs", "pairs across the scenes (false)", "{:.0f}"),
    ("matches_per_false_pair", "raw matches per false pair", "{:.1f}"),
    ("false_pairs_verified", "false pairs verified", "{:.0f}"),
    ("inliers_per_verified_false_pair", "inliers per verified false pair", "{:.1f}"),
    ("true_pairs", "pairs within a scene (true)", "{:.0f}"),
    ("true_pairs_verified", "true pairs verified", "{:.0f}"),
    ("largest_model", "largest model: images of scene a + b", "{}"),
]


@dataclass
class FalsePairsConf:
    methods: list[str] | None = None  # plugin methods; None: every available one
    max_images: int = 6  # per scene, the first in name order
    run: RunConf = field(default_factory=RunConf)


def mix_scenes(scene_a: Path, scene_b: Path, folder: Path, max_images: int) -> None:
    """Link the first `max_images` images of each scene into `folder`/a and `folder`/b (replaced if there)."""
    shutil.rmtree(folder, ignore_errors=True)
    for scene, source in zip(SCENES, (scene_a, scene_b)):
        names = list_images(source)[:max_images]
        if len(names) < 2:
            raise FileNotFoundError(f"{source} has fewer than 2 images")
        link_images(source, names, folder / scene)


def _scene(name: str) -> str:
    return name.split("/", 1)[0]


def false_pair_statistics(run: MethodRun) -> dict[str, Any]:
    """The report entry of one method's run on the mixed folder (see the module docstring)."""
    with open_database(run.database) as database:
        names = {image.image_id: image.name for image in database.read_all_images()}
        pair_ids, matches = database.read_all_matches()
    raw = {}
    for pair_id, pair_matches in zip(pair_ids, matches, strict=True):
        id0, id1 = pycolmap.pair_id_to_image_pair(pair_id)
        raw[names[id0], names[id1]] = len(pair_matches)
    counts = {scene: sum(_scene(name) == scene for name in names.values()) for scene in SCENES}
    num_false = counts["a"] * counts["b"]
    num_true = sum(count * (count - 1) // 2 for count in counts.values())
    false_raw = [count for (name0, name1), count in raw.items() if _scene(name0) != _scene(name1)]
    verified = verified_pairs(run.database)
    false_inliers = [len(inliers) for (name0, name1), inliers in verified.items() if _scene(name0) != _scene(name1)]
    registered = [image.name for image in run.model.images.values() if image.has_pose] if run.model else []
    return {
        "false_pairs": num_false,
        "true_pairs": num_true,
        # Pairs without any match have no row in the database: they count as zero.
        "matches_per_false_pair": float(np.sum(false_raw) / max(num_false, 1)),
        "false_pairs_verified": len(false_inliers),
        "inliers_per_verified_false_pair": float(np.mean(false_inliers)) if false_inliers else 0.0,
        "true_pairs_verified": len(verified) - len(false_inliers),
        "largest_model": " + ".join(str(sum(_scene(name) == scene for name in registered)) for scene in SCENES),
    }


def false_pairs_table(report: dict[str, Any]) -> str:
    return metrics_by_method_table(report["methods"], TABLE_ROWS)


def bench_false_pairs(
    scene_a: Path, scene_b: Path, output_dir: Path, conf: FalsePairsConf = FalsePairsConf()
) -> dict[str, Any]:
    """Run every method on the two scenes mixed; write report.json and report.md to `output_dir`, return the report."""
    output_dir = Path(output_dir)
    folder = output_dir / "images"
    mix_scenes(Path(scene_a), Path(scene_b), folder, conf.max_images)
    runs, _ = run_methods(folder, output_dir, CompareConf(methods=conf.methods, run=conf.run))
    report = {
        "scenes": {"a": str(scene_a), "b": str(scene_b)},
        "max_images": conf.max_images,
        "methods": {run.name: false_pair_statistics(run) for run in runs},
    }
    write_json(report, output_dir / "report.json")
    header = (
        f"# False pairs: {scene_a} (a) mixed with {scene_b} (b)\n\n"
        f"{conf.max_images} images of each at most, exhaustive pairs, max size {conf.run.max_size}; "
        "every pair across the two scenes is false.\n\n"
    )
    (output_dir / "report.md").write_text(header + false_pairs_table(report) + "\n")
    return report
