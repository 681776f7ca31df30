"""`msk compare`, `msk bench scenes` and `msk bench homography` end to end on small real subsets."""

import argparse
import json

import numpy as np
import pycolmap
import pytest

from colmap_plugin.database import open_database
from reconstruction_eval.cli import EXIT_USAGE, add_eval_commands
from reconstruction_eval.runs import link_images


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="msk")
    add_eval_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(arg) for arg in argv])
    return args.func(args)


def test_unusable_input_exits_with_code_2(tmp_path, capsys):
    assert run_cli("compare", tmp_path / "missing", "--output", tmp_path / "out") == EXIT_USAGE
    assert "image folder not found" in capsys.readouterr().err
    (tmp_path / "images").mkdir()
    assert run_cli("compare", tmp_path / "images", "--output", tmp_path / "out", "--gt", tmp_path) == EXIT_USAGE
    assert "no COLMAP model" in capsys.readouterr().err
    assert run_cli("compare", tmp_path / "images", "--output", tmp_path / "out", "--gt-intrinsics") == EXIT_USAGE
    assert "--gt-intrinsics needs the ground truth" in capsys.readouterr().err
    assert run_cli("bench", "homography", tmp_path, "--output", tmp_path / "out") == EXIT_USAGE
    assert run_cli("bench", "scenes", tmp_path, "--output", tmp_path / "out") == EXIT_USAGE
    with pytest.raises(SystemExit) as exit_info:
        run_cli("compare", tmp_path / "images", "--output", tmp_path / "out", "--methods", "sift,nonsense")
    assert exit_info.value.code == EXIT_USAGE
    for command, bad_number in (
        (["compare"], ["--max-keypoints", "0"]),
        (["compare"], ["--max-size", "-1"]),
        (["bench", "speed"], ["--max-images", "0"]),
    ):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(*command, tmp_path / "images", "--output", tmp_path / "out", *bad_number)
        assert exit_info.value.code == EXIT_USAGE and "expected a positive integer" in capsys.readouterr().err
    for budgets in ("0", "4096,many", ""):
        with pytest.raises(SystemExit):
            run_cli("bench", "speed", tmp_path / "images", "--output", tmp_path / "out", "--max-keypoints", budgets)


def test_bench_scenes_compares_colmap_sift_with_the_plugin(datasets, tmp_path, capsys):
    # One scene of four fountain images at 400 px: the reference and the plugin's SIFT must both
    # register every image and get the relative poses right within a few degrees.
    scene = datasets / "eval" / "fountain-P11"
    link_images(
        scene / "images", ["0000.jpg", "0001.jpg", "0002.jpg", "0003.jpg"], tmp_path / "scenes" / "fountain" / "images"
    )
    (tmp_path / "scenes" / "fountain" / "gt").symlink_to(scene / "gt")
    output = tmp_path / "out"
    assert (
        run_cli(
            "bench",
            "scenes",
            tmp_path / "scenes",
            "--output",
            output,
            "--methods",
            "sift",
            "--max-size",
            "400",
            "--camera-mode",
            "single",
            "--json",
        )
        == 0
    )

    summary = json.loads(capsys.readouterr().out)
    report = json.loads((output / "fountain" / "report.json").read_text())
    assert summary["scenes"]["fountain"]["methods"].keys() == report["methods"].keys() == {"colmap-sift", "sift"}
    assert report["num_pairs"] == 6 and report["gt_images"] == 4
    assert report["camera_mode"] == "single"
    for name, results in report["methods"].items():
        assert results["registered"] == 4, name
        assert results["verified_pairs"] == 6, name
        assert results["points3D"] > 100 and 2 <= results["track_length"] <= 4, name
        assert results["auc1"] <= results["auc3"] <= results["auc5"] <= results["auc10"], name
        assert results["auc5"] > 80, name
        assert results["center_error_median"] < 0.05, name  # GT units (metres), the cameras are metres apart
        # Pixels of the 1536-pixel files, keypoints found at 400: still well below a pixel for most matches.
        assert results["match_error_median"] < 1 and results["match_error_over_1px"] < 50, name
        assert len(results["pose_errors"]) == 6 and results["error"] is None, name
        if name == "colmap-sift":
            assert results["auc1_vs_reference"] is None and results["auc5_vs_reference"] is None
        else:  # [difference, low, high] in AUC points
            difference, low, high = results["auc5_vs_reference"]
            assert low <= high and -100 <= difference <= 100, name
        assert all(results[f"time_{stage}_s"] > 0 for stage in ("extract", "match", "verify", "map")), name
        with open_database(output / "fountain" / "runs" / name / "database.db") as database:
            assert len(database.read_all_cameras()) == 1, name  # --camera-mode single, for the reference too
    figures = ["pose_errors.png", "track_lengths.png", "observations_per_image.png", "times.png", "matches_0.png"]
    for figure in figures:
        assert (output / "fountain" / figure).stat().st_size > 1000, figure
        assert f"]({figure})" in (output / "fountain" / "report.md").read_text()
    assert (
        "| pose AUC@5° minus colmap-sift's, 95% interval (images resampled) | – | "
        in (output / "fountain" / "report.md").read_text()
    )
    summary_table = (output / "report.md").read_text()
    assert "| fountain | colmap-sift | 4 / 4 |" in summary_table and "AUC@5° minus colmap-sift's [95%]" in summary_table
    assert (output / "auc5.png").is_file()


def test_compare_with_the_ground_truth_intrinsics_estimates_poses_alone(datasets, tmp_path, capsys):
    scene = datasets / "eval" / "fountain-P11"
    link_images(scene / "images", ["0000.jpg", "0001.jpg", "0002.jpg"], tmp_path / "images")
    output = tmp_path / "out"
    arguments = ["--output", output, "--methods", "sift", "--max-size", "400", "--gt-intrinsics", "--json"]
    assert run_cli("compare", tmp_path / "images", "--gt", scene / "gt", *arguments) == 0

    report = json.loads(capsys.readouterr().out)
    assert report["intrinsics"] == "ground truth, fixed"
    gt = pycolmap.Reconstruction(scene / "gt")
    gt_cameras = {image.name: gt.cameras[image.camera_id] for image in gt.images.values()}
    for name in ("colmap-sift", "sift"):
        assert report["methods"][name]["registered"] == 3, name
        model = pycolmap.Reconstruction(output / "runs" / name / "sparse")
        for image in model.images.values():  # keypoints at 400 px, cameras of the full-size images, unchanged
            camera = model.cameras[image.camera_id]
            assert camera.model == gt_cameras[image.name].model, name
            assert np.array_equal(camera.params, gt_cameras[image.name].params), name


def test_bench_homography_on_two_easy_pairs(datasets, tmp_path, capsys):
    source = datasets / "homography" / "magsac"
    dataset = tmp_path / "magsac"
    link_images(source / "images", ["boatA.png", "boatB.png", "adamA.png", "adamB.png"], dataset / "images")
    (dataset / "gt").mkdir()
    for name in ("boat", "adam"):
        (dataset / "gt" / f"{name}_H_AtoB.txt").symlink_to(source / "gt" / f"{name}_H_AtoB.txt")
    output = tmp_path / "out"
    assert (
        run_cli(
            "bench",
            "homography",
            dataset,
            "--output",
            output,
            "--methods",
            "sift",
            "--max-size",
            "640",
            "--max-keypoints",
            "1024",
        )
        == 0
    )
    assert "MMA@3px" in capsys.readouterr().out

    results = json.loads((output / "report.json").read_text())["methods"]["sift"]
    assert set(results["pairs"]) == {"adam", "boat"}
    assert results["keypoints"] <= 1024
    mma = [results[f"mma{t}"] for t in range(1, 11)]
    assert mma == sorted(mma) and 0.5 < mma[2] <= 1  # monotone; most SIFT matches are right on these pairs
    assert results["correct_matches"] > 50 and 0.2 < results["repeatability"] < 1
    assert results["h_acc1"] <= results["h_acc3"] <= results["h_acc5"] and results["h_acc5"] > 0
    for figure in ("mma.png", "correct_matches.png", "times.png", "matches_0.png"):
        assert (output / figure).stat().st_size > 1000, figure


def test_bench_rotation_shows_that_upright_keypoints_fail_on_turned_images(datasets, tmp_path, capsys):
    source = datasets / "homography" / "magsac"
    dataset = tmp_path / "magsac"
    link_images(source / "images", ["boatA.png", "boatB.png"], dataset / "images")
    (dataset / "gt").mkdir()
    (dataset / "gt" / "boat_H_AtoB.txt").symlink_to(source / "gt" / "boat_H_AtoB.txt")
    output = tmp_path / "out"
    argv = ["bench", "rotation", dataset, "--output", output, "--angles", "0,90", "--max-size", "480"]
    assert run_cli(*argv, "--max-keypoints", "512") == 0
    assert "msk upright" in capsys.readouterr().out

    results = json.loads((output / "report.json").read_text())["results"]
    oriented, upright = results["msk"], results["msk upright"]
    assert oriented["0"]["mma3"] > 0.5 and upright["0"]["mma3"] > 0.5  # both fine without rotation
    assert oriented["90"]["correct_matches"] > 0.5 * oriented["0"]["correct_matches"]
    assert upright["90"]["correct_matches"] < 0.2 * upright["0"]["correct_matches"]
    assert (output / "images" / "90" / "boatB.png").is_file() and (output / "mma_by_angle.png").stat().st_size > 1000
    with pytest.raises(SystemExit):
        run_cli("bench", "rotation", dataset, "--output", output, "--angles", "ninety")


def test_bench_false_pairs_counts_pairs_across_two_scenes(datasets, tmp_path, capsys):
    # Three images of each Strecha scene at 400 px: the 9 pairs across them are false; COLMAP's SIFT
    # and the plugin's accept none of them and keep the scenes apart.
    output = tmp_path / "out"
    scenes = [datasets / "eval" / scene / "images" for scene in ("fountain-P11", "Herz-Jesus-P8")]
    options = ["--output", output, "--methods", "sift", "--max-size", "400", "--max-images", "3", "--json"]
    assert run_cli("bench", "false-pairs", *scenes, *options) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["methods"]) == {"colmap-sift", "sift"}
    for results in report["methods"].values():
        assert results["false_pairs"] == 9 and results["true_pairs"] == 6
        assert results["false_pairs_verified"] == 0 and results["true_pairs_verified"] >= 5
        assert results["largest_model"] in ("3 + 0", "0 + 3")
    assert "false pairs verified" in (output / "report.md").read_text()
    assert run_cli("bench", "false-pairs", tmp_path / "missing", scenes[1], "--output", output) == EXIT_USAGE


def test_bench_speed_times_colmap_sift_at_the_same_image_size(datasets, tmp_path):
    # COLMAP's extractor ignores max_image_size on a bitmap it is handed: timed at full size it would
    # find more keypoints than the plugin's SIFT on the shrunk image, and the timing would be unfair.
    link_images(datasets / "eval" / "fountain-P11" / "images", ["0000.jpg"], tmp_path / "images")
    output = tmp_path / "out"
    assert (
        run_cli("bench", "speed", tmp_path / "images", "--output", output, "--methods", "sift", "--max-size", "320")
        == 0
    )

    methods = json.loads((output / "report.json").read_text())["methods"]
    assert methods["colmap-sift"]["keypoints_per_image"] == methods["sift"]["keypoints_per_image"] > 0
    assert all(run["folder_seconds_per_image"] > 0 for run in methods.values())
