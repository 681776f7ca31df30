"""Existing databases are never mixed, overwritten or damaged; bad arguments get one clear line;
the same images and options give the same results run after run."""

import re
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pycolmap
import pytest
from test_reliability_interrupts import database_content, outputs_content

from colmap_plugin.cli import main
from colmap_plugin.database import PYCOLMAP_VERSION, USER_VERSION_OFFSET, version_number

PROGRESS_BAR = re.compile(r"\| *\d+/\d+ \[")  # tqdm's "| 3/12 ["

# Holds SQLite's write lock on a database, as a COLMAP run writing to it would (tests only).
LOCK_HOLDER = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN IMMEDIATE")
print("holding", flush=True)
sys.stdin.read()
"""

# Keeps an HDF5 store open for writing, as a running `msk extract` does.
STORE_HOLDER = """
import h5py, sys
store = h5py.File(sys.argv[1], "a")
print("holding", flush=True)
sys.stdin.read()
"""


@contextmanager
def held(script: str, path: Path) -> Iterator[None]:
    """Another process holding `path` (with one of the scripts above) while the block runs."""
    holder = subprocess.Popen([sys.executable, "-c", script, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"holding"
        yield
    finally:
        holder.stdin.close()
        holder.wait()


@pytest.fixture
def images(tmp_path, synthetic_scene) -> Path:
    folder = tmp_path / "images"
    shutil.copytree(synthetic_scene / "images", folder)
    return folder


@pytest.fixture(scope="module")
def extracted(synthetic_scene, tmp_path_factory) -> Path:
    """The output folder of `msk extract` on the synthetic scene (do not modify)."""
    output = tmp_path_factory.mktemp("extracted") / "out"
    assert main(extract_args(synthetic_scene / "images", output)) == 0
    return output


def extract_args(images: Path, output: Path, *options: str) -> list[str]:
    return ["extract", str(images), "--database", str(output / "database.db"), "--max-size", "640", *options]


def one_error_line(capsys) -> str:
    """The one line a failed command printed on stderr, besides its progress bars."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip() and not PROGRESS_BAR.search(line)]
    assert len(lines) == 1 and lines[0].startswith("msk: error: "), lines
    return lines[0]


def set_written_by(path: Path, number: int) -> None:
    """Make a database look written by another COLMAP (the user_version field of its SQLite header)."""
    with open(path, "r+b") as file:
        file.seek(USER_VERSION_OFFSET)
        file.write(number.to_bytes(4, "big"))


def test_database_with_colmap_sift_is_refused_untouched_then_replaced_with_overwrite(images, tmp_path, capsys):
    database = tmp_path / "out" / "database.db"
    database.parent.mkdir()
    options = pycolmap.FeatureExtractionOptions()
    options.num_threads = 1
    pycolmap.extract_features(database, images, extraction_options=options, device=pycolmap.Device.cpu)
    before = database_content(database)
    capsys.readouterr()

    assert main(extract_args(images, database.parent)) == 2
    assert "already holds features of another kind" in one_error_line(capsys)
    assert database_content(database) == before

    assert main(extract_args(images, database.parent, "--overwrite")) == 0
    after = database_content(database)
    assert after["images"] == before["images"] and after["cameras"] == before["cameras"]
    assert after["keypoints"] != before["keypoints"]


def test_locked_database_gives_a_clear_error_and_stays_intact(extracted, synthetic_scene, tmp_path, capsys):
    output = shutil.copytree(extracted, tmp_path / "out")
    before = database_content(output / "database.db")
    with held(LOCK_HOLDER, output / "database.db"):
        for argv in (
            extract_args(synthetic_scene / "images", output),
            ["match", "--database", str(output / "database.db")],
        ):
            assert main(argv) == 2
            assert "locked by another process" in one_error_line(capsys)
    assert database_content(output / "database.db") == before
    assert main(["match", "--database", str(output / "database.db")]) == 0  # works once the lock is gone


def test_store_in_use_by_another_process_gives_a_clear_error_and_stays(extracted, synthetic_scene, tmp_path, capsys):
    output = shutil.copytree(extracted, tmp_path / "out")
    before = outputs_content(output)
    with held(STORE_HOLDER, output / "features.h5"):
        assert main(extract_args(synthetic_scene / "images", output)) == 2
        assert "features.h5 is in use by another process" in one_error_line(capsys)
    assert outputs_content(output) == before and not (output / "features.h5.damaged").exists()


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_store_path_naming_another_file_is_refused_and_kept(overwrite, extracted, synthetic_scene, tmp_path, capsys):
    output = shutil.copytree(extracted, tmp_path / "out")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8\xff precious")
    argv = extract_args(synthetic_scene / "images", output, "--features", str(photo), *overwrite)
    assert main(argv) == 2
    assert "photo.jpg is not an HDF5 store" in one_error_line(capsys)
    assert photo.read_bytes() == b"\xff\xd8\xff precious"


def test_database_of_a_newer_colmap_is_refused_untouched(extracted, synthetic_scene, tmp_path, capsys):
    output = shutil.copytree(extracted, tmp_path / "out")
    set_written_by(output / "database.db", version_number("4.3.0"))
    before = (output / "database.db").read_bytes()
    assert main(extract_args(synthetic_scene / "images", output)) == 2
    assert "was written by COLMAP 4.3.0, newer than" in one_error_line(capsys)
    assert main(["match", "--database", str(output / "database.db")]) == 2
    assert "newer than" in one_error_line(capsys)
    assert (output / "database.db").read_bytes() == before


def test_database_of_an_older_colmap_is_upgraded_with_a_note(extracted, synthetic_scene, tmp_path, capsys):
    output = shutil.copytree(extracted, tmp_path / "out")
    set_written_by(output / "database.db", 3800)  # COLMAP 3.8
    assert main(extract_args(synthetic_scene / "images", output)) == 0
    assert capsys.readouterr().err.count("was written by COLMAP before 4.0 (version number 3800)") == 1
    with open(output / "database.db", "rb") as file:
        file.seek(USER_VERSION_OFFSET)
        assert int.from_bytes(file.read(4), "big") == PYCOLMAP_VERSION


@pytest.mark.parametrize("kind", ["text file", "folder"])
def test_what_is_not_a_database_is_refused(kind, synthetic_scene, tmp_path, capsys):
    path = tmp_path / "database.db"
    if kind == "folder":
        path.mkdir()
    else:
        path.write_text("name,x,y\n")
    assert main(["extract", str(synthetic_scene / "images"), "--database", str(path)]) == 2
    assert ("not an SQLite file" if kind == "text file" else "is a folder") in one_error_line(capsys)
    assert not (tmp_path / "features.h5").exists()


def bad_inputs(tmp: Path) -> None:
    """The folders and pairs files the bad command lines below point at."""
    for folder in ("empty", "notes", "images"):
        (tmp / folder).mkdir()
    (tmp / "notes" / "readme.txt").write_text("no images here")
    pycolmap.Bitmap.from_array(np.full((48, 64), 128, np.uint8)).write(tmp / "images" / "grey.png")
    (tmp / "binary_pairs.txt").write_bytes(b"\xff\xfe\x00 binary \x80\x81")
    (tmp / "unknown_pairs.txt").write_text("camera000001_frame000000.png holiday/beach.jpg\n")
    (tmp / "malformed_pairs.txt").write_text("camera000001_frame000000.png\n")


def matching(extracted: Path, tmp: Path, *options: str) -> list[str]:
    return ["match", "--database", str(extracted / "database.db"), "--matches", str(tmp / "matches.h5"), *options]


def extracting(folder: str, tmp: Path, *options: str) -> list[str]:
    return ["extract", str(tmp / folder), "--database", str(tmp / "db.db"), *options]


# case -> (command line, given the extracted output folder and a scratch folder; what its one error line says)
BAD_ARGUMENTS = {
    "missing image folder": (lambda out, tmp: extracting("nowhere", tmp), "image folder not found"),
    "empty image folder": (lambda out, tmp: extracting("empty", tmp), "no images in"),
    "folder without images": (lambda out, tmp: extracting("notes", tmp), "no images in"),
    "unknown method": (lambda out, tmp: extracting("images", tmp, "--method", "surf"), "invalid choice: 'surf'"),
    "negative max size": (
        lambda out, tmp: extracting("images", tmp, "--max-size", "-5"),
        "expected a positive integer",
    ),
    "unknown camera model": (
        lambda out, tmp: extracting("images", tmp, "--camera-model", "FISH9"),
        "unknown camera model",
    ),
    "missing database": (lambda out, tmp: ["match", "--database", str(tmp / "missing.db")], "database not found"),
    "missing feature store": (
        lambda out, tmp: matching(out, tmp, "--features", str(tmp / "none.h5")),
        "feature store not found",
    ),
    "unknown matcher": (lambda out, tmp: matching(out, tmp, "--matcher", "superglue"), "invalid choice: 'superglue'"),
    "unreadable pairs file": (
        lambda out, tmp: matching(out, tmp, "--pairs", str(tmp / "binary_pairs.txt")),
        "cannot read pairs file",
    ),
    "pairs file is a folder": (
        lambda out, tmp: matching(out, tmp, "--pairs", str(tmp / "empty")),
        "existing pairs file",
    ),
    "pairs file naming unknown images": (
        lambda out, tmp: matching(out, tmp, "--pairs", str(tmp / "unknown_pairs.txt")),
        "names 1 images not in the database, e.g. 'holiday/beach.jpg'",
    ),
    "malformed pairs file": (
        lambda out, tmp: matching(out, tmp, "--pairs", str(tmp / "malformed_pairs.txt")),
        ":1: expected",
    ),
    "bad sequential overlap": (lambda out, tmp: matching(out, tmp, "--pairs", "sequential:x"), "positive integer"),
    "missing image folder (run)": (
        lambda out, tmp: ["run", str(tmp / "nowhere"), "--output", str(tmp / "run")],
        "not found",
    ),
    "unknown command": (lambda out, tmp: ["mosaic"], "invalid choice: 'mosaic'"),
}


def exit_code(argv: list[str]) -> int:
    """What `msk ARGV` exits with (argparse exits by itself)."""
    try:
        return main(argv)
    except SystemExit as exit:
        return exit.code


@pytest.mark.parametrize("case", BAD_ARGUMENTS)
def test_bad_arguments_get_one_error_line_and_exit_code_2(case, extracted, tmp_path, capsys):
    bad_inputs(tmp_path)
    command_line, message = BAD_ARGUMENTS[case]
    before = outputs_content(extracted)
    assert exit_code(command_line(extracted, tmp_path)) == 2
    assert message in one_error_line(capsys)
    assert outputs_content(extracted) == before and not (tmp_path / "matches.h5").exists()


def test_same_images_and_options_give_the_same_results(synthetic_scene, tmp_path):
    """Keypoints, descriptors, matches and verified geometries, with the default threads."""
    contents = []
    for run in ("first", "second"):
        output = tmp_path / run
        assert main(extract_args(synthetic_scene / "images", output)) == 0
        assert main(["match", "--database", str(output / "database.db")]) == 0
        contents.append(outputs_content(output))
    assert contents[0] == contents[1]
