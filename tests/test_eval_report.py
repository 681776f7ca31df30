"""Report helpers, figures and the small pieces of compare and the homography bench."""

import json

import numpy as np
import pycolmap
import pytest

from colmap_plugin.features import Features
from reconstruction_eval import plots
from reconstruction_eval.compare import restricted_to
from reconstruction_eval.homography_bench import strongest
from reconstruction_eval.report import finite_or_none, metrics_by_method_table, write_json


def test_metrics_table_has_one_column_per_method_and_skips_absent_metrics():
    methods = {"colmap-sift": {"registered": 11, "auc5": 93.25}, "sift": {"registered": 10, "auc5": None}}
    rows = [("registered", "registered images", "{:d}"), ("auc5", "AUC@5", "{:.1f}"), ("auc10", "AUC@10", "{:.1f}")]
    table = metrics_by_method_table(methods, rows).splitlines()
    assert table[0] == "| metric | colmap-sift | sift |"
    assert table[2:] == ["| registered images | 11 | 10 |", "| AUC@5 | 93.2 | – |"]


def test_json_report_refuses_infinity(tmp_path):
    write_json({"error": finite_or_none(np.inf), "value": finite_or_none(1.5)}, tmp_path / "report.json")
    assert json.loads((tmp_path / "report.json").read_text()) == {"error": None, "value": 1.5}
    with pytest.raises(ValueError):
        write_json({"value": float("inf")}, tmp_path / "bad.json")


def test_pairs_to_draw_spread_from_hardest_to_easiest():
    counts = {"a": 0, "b": 20, "c": 500, "d": 35, "e": 100, "f": 60}
    assert plots.pairs_to_draw(counts, 3) == ["b", "f", "c"]
    assert plots.pairs_to_draw(counts, 10) == ["b", "d", "f", "e", "c"]  # never one that no method matched


def test_figures_are_written_as_png_after_pycolmap_is_loaded(tmp_path):
    # Regression: matplotlib's own PNG writer aborts the process once pycolmap is imported first.
    assert pycolmap.__version__
    thresholds = np.geomspace(0.01, 180, 50)
    path = tmp_path / "curves.png"
    plots.plot_curves(
        {"a": plots.recall_curve(np.array([0.5, 2.0, 180.0]), thresholds)},
        "x",
        "y",
        "t",
        path,
        marks=(1, 5),
        log_x=True,
    )
    plots.plot_grouped_bars(
        {"a": np.array([1, 2]), "b": np.array([3, 0])}, ["0001", "0002"], "y", "t", tmp_path / "bars.png"
    )
    plots.plot_stage_times({"a": {"extract": 1.0, "map": 2.0}}, ("extract", "match", "map"), tmp_path / "times.png")
    for name in ("curves.png", "bars.png", "times.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bitmap = pycolmap.Bitmap.read(path, True)
    assert bitmap.width > 300 and bitmap.height > 200


def test_recall_curve_counts_errors_at_or_below_each_threshold():
    thresholds, recall = plots.recall_curve(np.array([0.5, 2.0, 180.0, 3.0]), np.array([0.1, 0.5, 2.5, 180.0]))
    np.testing.assert_allclose(recall, [0, 25, 50, 100])


def test_strongest_keeps_the_best_scores_then_the_largest_scales():
    features = Features(
        keypoints=np.arange(12, dtype=np.float32).reshape(6, 2),
        scales=np.array([1, 1, 1, 1, 4, 2], np.float32),
        orientations=np.zeros(6, np.float32),
        scores=np.array([0.1, 0.9, 0.5, 0.9, 0.5, 0.5], np.float32),
        descriptors=np.arange(6, dtype=np.float32)[:, None],
    )
    # 0.9 twice (1 and 3), then among the 0.5 ties the largest scale (4).
    kept = strongest(features, 3)
    np.testing.assert_array_equal(kept.descriptors[:, 0], [1, 3, 4])
    np.testing.assert_array_equal(kept.keypoints, features.keypoints[[1, 3, 4]])
    np.testing.assert_array_equal(kept.scales, [1, 1, 4])
    assert len(strongest(features, 10)) == 6


def test_ground_truth_is_restricted_to_the_compared_images():
    gt = pycolmap.Reconstruction()
    camera = pycolmap.Camera.create_from_model_id(1, pycolmap.CameraModelId.SIMPLE_PINHOLE, 100.0, 200, 200)
    gt.add_camera_with_trivial_rig(camera)
    for image_id, name in enumerate(["a.jpg", "b.jpg", "c.jpg"], start=1):
        gt.add_image_with_trivial_frame(pycolmap.Image(name=name, camera_id=1, image_id=image_id), pycolmap.Rigid3d())
    restricted = restricted_to(gt, ["a.jpg", "c.jpg", "z.jpg"])
    assert sorted(image.name for image in restricted.images.values() if image.has_pose) == ["a.jpg", "c.jpg"]
    assert gt.num_reg_images() == 3  # the original is untouched
