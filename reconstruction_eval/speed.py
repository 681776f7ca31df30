"""`msk bench speed`: extraction time per image, COLMAP's SIFT and plugin methods, in one run.

Every method sees the same images at the same size, one after the other, so machine load
affects them alike. Two figures per method:
- `seconds_per_image`: one image at a time, decoding, resizing and extraction, as a caller of
  the extractor gets them: COLMAP's SIFT through `pycolmap.FeatureExtractor` (CPU; its SIFT
  uses one thread per image), plugin methods through their extractor (torch on all threads);
- `folder_seconds_per_image`: the whole folder into a new database, all cores busy: COLMAP's
  `extract_features` (one image per thread) against `msk extract` (one image per worker, a worker
  per core), database writes and loading the models included. This is what extracting a folder costs.
For methods that describe keypoints with MSK, the time to describe exactly `describe_count`
SIFT keypoints is reported on its own, the figure the descriptor's speed target refers to.
"""

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pycolmap
import torch

from colmap_plugin.extraction import ExtractionConf, extract_features
from colmap_plugin.features import create_extractor
from colmap_plugin.images import list_images, read_image
from colmap_plugin.keypoints import affine_keypoints
from colmap_plugin.sift_process import extract_sift

from .runs import colmap_extract, link_images

REFERENCE = "colmap-sift"


@dataclass
class SpeedConf:
    max_size: int = 1600
    max_images: int = 5
    describe_count: int = 4000
    keypoint_budgets: tuple[int | None, ...] = (None,)  # plugin methods run at each; None: the method's default


def _colmap_sift(max_size: int):
    options = pycolmap.FeatureExtractionOptions()
    options.max_image_size = max_size
    extractor = pycolmap.FeatureExtractor.create(options, pycolmap.Device.cpu)

    def extract(path: Path) -> int:
        # Read and shrunk like the plugin's images: the extractor itself ignores max_image_size.
        keypoints, _ = extract_sift(extractor, read_image(path, max_size).gray)
        return len(keypoints)

    return extract


def _plugin(method: str, max_size: int, max_keypoints: int | None):
    extractor = create_extractor(method, max_keypoints=max_keypoints)

    def extract(path: Path) -> int:
        image = read_image(path, max_size)
        return len(extractor.extract(image.gray))

    return extract


def _folder_seconds(
    method: str | None, image_dir: Path, names: list[str], max_size: int, max_keypoints: int | None
) -> float:
    """Seconds per image to extract the images `names` of `image_dir` as a folder into a new database.

    method None: COLMAP's extraction. Both use every core this process may use.
    """
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        link_images(image_dir, names, folder)
        start = time.perf_counter()
        if method is None:
            colmap_extract(Path(tmp) / "database.db", folder, max_size)
        else:
            workers = len(os.sched_getaffinity(0))
            conf = ExtractionConf(method=method, max_size=max_size, max_keypoints=max_keypoints, workers=workers)
            extract_features(folder, Path(tmp) / "database.db", Path(tmp) / "features.h5", conf)
        return (time.perf_counter() - start) / len(names)


def _describe_time(path: Path, conf: SpeedConf) -> float:
    """Seconds to describe `describe_count` SIFT keypoints of the image with the MSK descriptor, as extractors do."""
    from msk.descriptor import describe_keypoints
    from msk.plugin import resolve_bfloat16
    from msk.weights import load_descriptor

    image = read_image(path, conf.max_size).gray
    sift = create_extractor("sift", max_keypoints=2 * conf.describe_count).extract(image)
    keep = slice(0, min(conf.describe_count, len(sift)))
    keypoints = affine_keypoints(sift.keypoints[keep], sift.scales[keep], sift.orientations[keep])
    model = load_descriptor()
    start = time.perf_counter()
    describe_keypoints(model, image, keypoints, bfloat16=resolve_bfloat16(None))
    return time.perf_counter() - start


def bench_speed(image_dir: Path, methods: list[str], conf: SpeedConf = SpeedConf()) -> dict:
    """Mean seconds and keypoints per image for COLMAP's SIFT and each method (JSON-ready).

    Methods run at each of `conf.keypoint_budgets` are labelled METHOD@BUDGET.
    """
    names = list_images(Path(image_dir))[: conf.max_images]
    paths = [Path(image_dir) / name for name in names]
    plugin_runs = {
        method if budget is None else f"{method}@{budget}": (method, budget)
        for budget in conf.keypoint_budgets
        for method in methods
    }
    runners = {REFERENCE: _colmap_sift(conf.max_size)}
    runners.update({label: _plugin(method, conf.max_size, budget) for label, (method, budget) in plugin_runs.items()})
    for run in runners.values():  # warm-up: model loading and first-call allocations are not per-image costs
        run(paths[0])
    results = {}
    with torch.inference_mode():
        for name, run in runners.items():
            seconds, keypoints = [], []
            for path in paths:
                start = time.perf_counter()
                keypoints.append(run(path))
                seconds.append(time.perf_counter() - start)
            results[name] = {
                "seconds_per_image": float(np.mean(seconds)),
                "keypoints_per_image": float(np.mean(keypoints)),
            }
    for name, (method, budget) in {REFERENCE: (None, None), **plugin_runs}.items():
        results[name]["folder_seconds_per_image"] = _folder_seconds(
            method, Path(image_dir), names, conf.max_size, budget
        )
    if any("msk" in method for method in methods):
        results["describe"] = {
            "keypoints": conf.describe_count,
            "seconds_per_image": float(np.mean([_describe_time(path, conf) for path in paths])),
        }
    return {"images": names, "max_size": conf.max_size, "methods": results}
