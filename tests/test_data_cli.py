"""The data and train commands register on the `msk` parser, each with its handler as `func`, and
refuse missing inputs and bad numbers before any work starts."""

import argparse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from colmap_plugin.cli import EXIT_USAGE, main
from msk.data.cli import add_data_commands


def test_data_commands_register_on_a_parser(tmp_path):
    parser = argparse.ArgumentParser(prog="msk")
    add_data_commands(parser.add_subparsers(dest="command"))
    dataset = tmp_path / "out.h5"
    dataset.touch()
    args = parser.parse_args(["data", "build", str(tmp_path), "--output", "new.h5", "--max-points", "10"])
    assert args.func.__name__ == "_run_build" and args.max_points == 10 and args.output == Path("new.h5")
    args = parser.parse_args(["data", "build", str(tmp_path), "--output", "new.h5", "--num-threads", "-1"])
    assert args.num_threads == -1  # COLMAP's "all cores"
    args = parser.parse_args(["data", "show", str(dataset), "--output", "look.png"])
    assert args.func.__name__ == "_run_show" and args.dataset == dataset


@pytest.mark.parametrize(
    "command, complaint",
    [
        (["train", "detector", "{missing}.h5"], "file not found"),
        (["train", "detector", "{file}", "--scenes", "{missing}"], "folder not found"),
        (["train", "matcher", "{file}", "--scenes", "{file}"], "is not a folder"),
        (["train", "descriptor", "{folder}"], "is not a file"),
        (["data", "build", "{missing}", "--output", "{folder}/new.h5"], "folder not found"),
        (["data", "show", "{missing}.h5", "--output", "{folder}/look.png"], "file not found"),
        (["train", "detector", "{file}", "--scenes", "{folder}", "--sigma0", "-1"], "positive number"),
        (["train", "detector", "{file}", "--scenes", "{folder}", "--num-octaves", "0"], "positive integer"),
        (["train", "descriptor", "{file}", "--steps", "0"], "positive integer"),
        (["train", "matcher", "{file}", "--scenes", "{folder}", "--num-threads", "-1"], "positive integer"),
        (["data", "build", "{folder}", "--output", "{folder}/new.h5", "--num-threads", "0"], "or -1 (all cores)"),
        (["data", "build", "{folder}", "--output", "{folder}/new.h5", "--val-fraction", "nan"], "fraction from 0 to 1"),
        (["data", "build", "{folder}", "--output", "{folder}/new.h5", "--val-fraction", "1.5"], "fraction from 0 to 1"),
        (["data", "build", "{folder}", "--output", "{folder}/new.h5", "--patch-size", "-32"], "positive integer"),
        (["data", "build", "{folder}", "--output", "{folder}/new.h5", "--patch-size", "30"], "multiple of 4"),
        (["show", "keypoints", "{missing}.jpg", "--output", "{folder}/look.png"], "file not found"),
    ],
)
def test_missing_inputs_and_bad_numbers_are_one_line_usage_errors(tmp_path, capsys, command, complaint):
    file = tmp_path / "dataset.h5"
    file.touch()
    paths = {"missing": tmp_path / "missing", "file": file, "folder": tmp_path}
    with pytest.raises(SystemExit) as raised:
        main([part.format(**paths) for part in command])
    assert raised.value.code == EXIT_USAGE
    error = capsys.readouterr().err
    assert error.startswith("msk: error:") and complaint in error and error.count("\n") == 1


def test_show_keypoints_refuses_an_unusable_image(tmp_path, capsys):
    tiny, broken = tmp_path / "tiny.png", tmp_path / "broken.jpg"
    Image.fromarray(np.full((7, 10), 128, np.uint8)).save(tiny)
    broken.write_bytes(b"\xff\xd8 cut short")
    for image, complaint in ((tiny, "10x7 px at --max-size 1024 is too small"), (broken, "not an image")):
        assert main(["show", "keypoints", str(image), "--output", str(tmp_path / "look.png")]) == EXIT_USAGE
        error = capsys.readouterr().err
        assert error.startswith(f"msk: error: {image}: ") and complaint in error and error.count("\n") == 1
    assert not (tmp_path / "look.png").exists()
