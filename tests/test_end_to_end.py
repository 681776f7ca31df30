"""`msk run` on a real scene with ground truth: every image registered, poses accurate."""

import pycolmap

from colmap_plugin.cli import main
from reconstruction_eval.metrics import pose_auc, relative_pose_errors


def test_run_reconstructs_fountain_with_accurate_poses(datasets, tmp_path, capsys):
    scene = datasets / "eval" / "fountain-P11"
    output = tmp_path / "fountain"
    assert main(["run", str(scene / "images"), "--output", str(output), "--max-size", "1024"]) == 0
    assert "model written to" in capsys.readouterr().out

    model = pycolmap.Reconstruction(output / "sparse")
    assert model.num_reg_images() == 11
    assert model.compute_mean_reprojection_error() < 1.0
    auc = pose_auc(relative_pose_errors(model, pycolmap.Reconstruction(scene / "gt")))
    assert auc[5] > 60, auc  # SIFT reaches ~70-80 here; a broken convention or scale drops it far lower

    # A second run resumes: nothing extracted or matched again.
    assert main(["run", str(scene / "images"), "--output", str(output), "--max-size", "1024"]) == 0
    out = capsys.readouterr().out
    assert "extracted 0 images, 11 already done" in out and "matched 0 pairs" in out


def test_cli_reports_bad_arguments_in_one_line(tmp_path, capsys):
    assert main(["match", "--database", str(tmp_path / "missing.db")]) == 2
    assert main(["run", str(tmp_path / "nowhere"), "--output", str(tmp_path / "out")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["extract", str(tmp_path / "empty"), "--database", str(tmp_path / "db.db")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("msk: error: ") for line in errors)


def test_run_again_with_another_matcher_or_method_matches_again(datasets, tmp_path, capsys):
    """The output folder is run's own: matches of another matcher (or an older version of one) are made again;
    features of another method or version only with --overwrite, which the refusal names."""
    images = datasets / "eval" / "fountain-P11" / "images"
    run = ["run", str(images), "--output", str(tmp_path / "out"), "--max-size", "512", "--method", "sift"]
    assert main([*run, "--matcher", "mnn"]) == 0
    capsys.readouterr()
    assert main(run) == 0  # the method's own matcher now: the ratio test
    captured = capsys.readouterr()
    assert "held matches of another matcher, its options or version; matching again" in captured.err
    assert "matched 55 pairs" in captured.out
    # Features of another method are kept until asked for, with the option run has (not extract's --features).
    assert main([*run[:-1], "sift+msk"]) == 2
    error = capsys.readouterr().err
    assert "run again with --overwrite" in error and "--features" not in error
    assert main([*run[:-1], "sift+msk", "--overwrite"]) == 0  # new features, and the learned matcher
    assert "matched 55 pairs" in capsys.readouterr().out
    # Without the feature store, the database's features are what shows the other method; the same hint.
    (tmp_path / "out" / "features.h5").unlink()
    assert main(run) == 2
    error = capsys.readouterr().err
    assert "holds features of another kind" in error and "run again with --overwrite" in error
    assert "another database" not in error
