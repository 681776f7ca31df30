"""Killing `msk extract` or `msk match` at any moment and running it again ends exactly like a clean run.

Runs are compared by content (every database row, every store entry), never by file bytes.
Random kills: MSK_KILL_SEEDS (default 1) seeded runs per step, each killed once with SIGINT and
once with SIGKILL at a random moment of its work before the final run. Exact kills: a SIGKILL
inside the transactions and between the two writes of a step.
"""

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pycolmap
import pytest
import torch
from conftest import render_synthetic_scene

from colmap_plugin.cli import main
from colmap_plugin.database import open_database
from colmap_plugin.interrupts import deferred_interrupt

OPTIONS = ["--max-size", "640", "--max-keypoints", "1024"]  # small features keep matching quick
KILL_SEEDS = range(int(os.environ.get("MSK_KILL_SEEDS", "1")))


def database_content(path: Path) -> dict:
    """Every row extraction and matching write into a database, comparable with ==."""
    with open_database(path) as database:
        images = {image.image_id: image.name for image in database.read_all_images()}
        pairs = {pair_id: pycolmap.pair_id_to_image_pair(pair_id) for pair_id in database.read_all_matches()[0]}
        geometries = {}
        for pair_id, (id0, id1) in pairs.items():
            if database.exists_two_view_geometry(id0, id1):
                geometry = database.read_two_view_geometry(id0, id1)
                arrays = (geometry.inlier_matches, geometry.F, geometry.E, geometry.H)
                geometries[pair_id] = (int(geometry.config), *(np.asarray(a).tobytes() for a in arrays))
        return {
            "cameras": [
                (camera.camera_id, camera.model_name, camera.width, camera.height, camera.params.tobytes())
                for camera in database.read_all_cameras()
            ],
            "rigs": sorted(str(rig.todict()) for rig in database.read_all_rigs()),
            "frames": sorted(
                (frame.frame_id, frame.rig_id, str(list(frame.data_ids))) for frame in database.read_all_frames()
            ),
            "images": images,
            "pose_priors": sorted(str(prior) for prior in database.read_all_pose_priors()),
            "keypoints": {name: database.read_keypoints(i).tobytes() for i, name in images.items()},
            "descriptors": {name: database.read_descriptors(i).data.tobytes() for i, name in images.items()},
            "matches": {pair_id: database.read_matches(*ids).tobytes() for pair_id, ids in pairs.items()},
            "geometries": geometries,
        }


def store_content(path: Path) -> dict:
    """Every dataset of an HDF5 store and its identity, comparable with ==."""
    content = {}

    def add(name: str, obj) -> None:
        if isinstance(obj, h5py.Dataset):
            content[name] = obj[()].tobytes()

    with h5py.File(path, "r") as store:
        store.visititems(add)
        content["identity"] = store.attrs.get("identity")
    return content


def outputs_content(output: Path) -> dict:
    return {
        "database": database_content(output / "database.db"),
        "features": store_content(output / "features.h5"),
        "matches": store_content(output / "matches.h5") if (output / "matches.h5").exists() else None,
    }


def extract_args(images: Path, output: Path) -> list[str]:
    return ["extract", str(images), "--database", str(output / "database.db"), *OPTIONS]


def match_args(output: Path) -> list[str]:
    return ["match", "--database", str(output / "database.db")]


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    """Twelve 640x480 renderings of a textured synthetic scene (enough work to be killed in)."""
    return render_synthetic_scene(tmp_path_factory.mktemp("scene12"), 12) / "images"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread here and in the killed subprocesses: on a busy machine small torch ops
    take milliseconds each with more, and every run must use the same arithmetic as the reference."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(scene, tmp_path_factory) -> dict:
    """Clean, uninterrupted runs: the outputs after each step, their content and the step's duration."""
    root = tmp_path_factory.mktemp("reference")
    output = root / "out"
    reference = {"output": {}, "content": {}, "seconds": {}}
    for step, args in (("extract", extract_args(scene, output)), ("match", match_args(output))):
        start = time.perf_counter()
        assert main(args) == 0
        reference["seconds"][step] = time.perf_counter() - start
        reference["output"][step] = shutil.copytree(output, root / step)
        reference["content"][step] = outputs_content(output)
    return reference


def prepare(step: str, scene: Path, reference: dict, output: Path) -> list[str]:
    """The arguments of `step` writing into `output` (matching starts from the reference's extraction)."""
    if step == "extract":
        return extract_args(scene, output)
    shutil.copytree(reference["output"]["extract"], output)
    return match_args(output)


def subprocess_env(tmp: Path) -> dict[str, str]:
    """One torch thread, as in this process; scratch files of a killed run in `tmp`, not in /tmp."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp)}


def run_killed(args: list[str], marker: str, delay: float, signum: int, tmp: Path) -> tuple[int, str]:
    """Run `msk ARGS` in a subprocess, send `signum` `delay` seconds after its progress bar shows."""
    tmp.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "colmap_plugin.cli", *args]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=subprocess_env(tmp))
    stderr = bytearray()

    def read() -> None:  # all along, so the process never blocks on a full pipe
        for chunk in iter(lambda: process.stderr.read1(4096), b""):
            stderr.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 120
    while marker.encode() not in stderr and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(delay)
    process.send_signal(signum)
    returncode = process.wait(timeout=120)
    reader.join()
    return returncode, stderr.decode(errors="replace")


@pytest.mark.parametrize("seed", KILL_SEEDS)
@pytest.mark.parametrize("step", ["extract", "match"])
def test_killed_step_resumes_to_the_same_result(step, seed, scene, reference, tmp_path):
    output = tmp_path / "out"
    args = prepare(step, scene, reference, output)
    rng = random.Random(f"{step}-{seed}")
    for signum in rng.sample([signal.SIGINT, signal.SIGKILL], 2):
        delay = rng.uniform(0, 1.2 * reference["seconds"][step])
        returncode, stderr = run_killed(args, f"{step} (", delay, signum, tmp_path / "tmp")
        assert "Traceback" not in stderr
        expected = {signal.SIGINT: 130, signal.SIGKILL: -signal.SIGKILL}[signum]
        assert returncode in (expected, 0), (signum, delay, stderr[-2000:])  # 0: it had finished
        if returncode == 130:
            assert "interrupted; run the same command again to resume" in stderr
    assert main(args) == 0
    assert outputs_content(output) == reference["content"][step]


# Kills at exact points: the script patches one pycolmap or store call to SIGKILL its own process.
KILL_AT = """
import os, signal, sys
import pycolmap
from colmap_plugin import store
from colmap_plugin.cli import main
owner, name, after = {owner}, "{name}", {after}
original, calls = getattr(owner, name), []
def killing(*args, **kwargs):
    result = original(*args, **kwargs)
    calls.append(1)
    if len(calls) == after:
        os.kill(os.getpid(), signal.SIGKILL)
    return result
setattr(owner, name, killing)
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    "step, owner, name, after",
    [
        ("extract", "pycolmap.Database", "write_image", 3),  # inside the import's one transaction
        ("extract", "pycolmap.Database", "write_keypoints", 2),  # keypoints written, descriptors not yet
        ("match", "store.MatchStore", "write", 5),  # pair in the match store, not yet in the database
        ("match", "pycolmap.Database", "write_matches", 5),  # matches written, not yet verified
    ],
)
def test_kill_inside_a_write_resumes_to_the_same_result(step, owner, name, after, scene, reference, tmp_path):
    output = tmp_path / "out"
    args = prepare(step, scene, reference, output)
    script = KILL_AT.format(owner=owner, name=name, after=after)
    killed = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, env=subprocess_env(tmp_path)
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert main(args) == 0
    assert outputs_content(output) == reference["content"][step]


def test_interrupt_before_verification_is_verified_on_rerun(reference, tmp_path, monkeypatch, capsys):
    output = tmp_path / "out"
    args = prepare("match", None, reference, output)

    def interrupted(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr("colmap_plugin.matching.verify_pairs", interrupted)
    assert main(args) == 130
    monkeypatch.undo()
    assert main(args) == 0
    assert "matched 0 pairs" in capsys.readouterr().out  # the matches were kept, only verified now
    assert outputs_content(output) == reference["content"]["match"]


@pytest.mark.parametrize("store", ["features.h5", "matches.h5"])
@pytest.mark.parametrize("damage", ["one entry", "all but its signature", "emptied"])
def test_damaged_store_is_rebuilt_on_rerun(store, damage, scene, reference, tmp_path, capsys):
    output = tmp_path / "out"
    shutil.copytree(reference["output"]["match"], output)
    path = output / store
    if damage == "one entry":  # what a kill inside an HDF5 write can leave: an unreadable object header
        with h5py.File(path, "r") as file:
            key = sorted(file)[len(file) // 2]
            address = h5py.h5o.get_info(file[key].id).addr
        with open(path, "r+b") as file:
            file.seek(address)
            file.write(bytes(4))  # its version and message count, nothing of its neighbours
    elif damage == "all but its signature":
        garbage = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
        path.write_bytes(path.read_bytes()[:8] + garbage)
    else:  # a kill just after the file was created
        path.write_bytes(b"")
    args = extract_args(scene, output) if store == "features.h5" else match_args(output)
    assert main(args) == 0
    if damage != "emptied":  # an empty file holds nothing to keep: it is simply written anew
        assert f"warning: {path} was damaged" in capsys.readouterr().err and (output / f"{store}.damaged").is_file()
    assert outputs_content(output) == reference["content"]["match"]


def test_ctrl_c_waits_until_the_write_is_done():
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupt():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the signal arrives here, and is held
            steps.append("write finished")
    assert steps == ["write finished"]
