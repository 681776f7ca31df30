"""COLMAP's SIFT in a child process: the same features as in the caller's, errors reported, a dead child replaced."""

import os
import pickle
import signal

import numpy as np
import pycolmap
import pytest

from colmap_plugin.sift import SiftExtractor
from colmap_plugin.sift_process import SiftProcess, SiftProcessError, extract_sift, sift_options


def textured_image(seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).random((40, 60))
    return (np.kron(noise, np.ones((6, 6))) * 255).astype(np.uint8)  # 240x360, blocks of 6 px


def sift_in_this_process(image: np.ndarray, max_keypoints: int) -> tuple[np.ndarray, np.ndarray]:
    options = sift_options(max_keypoints, upright=False, num_threads=-1)
    return extract_sift(pycolmap.FeatureExtractor.create(options, pycolmap.Device.cpu), image)


def test_child_extracts_what_pycolmap_extracts_in_the_caller():
    image = textured_image(0)
    features = SiftExtractor(max_keypoints=500).extract(image)
    rows, descriptors = sift_in_this_process(image, max_keypoints=500)
    assert len(features) > 100
    assert np.array_equal(features.keypoints, rows[:, :2]) and np.array_equal(features.scales, rows[:, 2])
    assert np.array_equal(features.orientations, rows[:, 3]) and np.array_equal(features.descriptors, descriptors)


def test_colmaps_refusal_is_raised_in_the_caller_and_the_child_goes_on():
    sift = SiftProcess(max_keypoints=100, upright=False, num_threads=1)
    sift.extract(textured_image(0))
    child = sift._child
    with pytest.raises(RuntimeError, match="positive width"):
        sift.extract(np.zeros((0, 5), np.uint8))
    rows, _ = sift.extract(textured_image(0))
    assert sift._child is child and len(rows) > 0
    sift.close()
    assert child.returncode == 0  # ended by closing its input, not killed


def test_a_killed_child_fails_one_image_and_the_next_starts_a_new_one():
    sift = SiftProcess(max_keypoints=100, upright=False, num_threads=1)
    first, _ = sift.extract(textured_image(0))
    os.kill(sift._child.pid, signal.SIGKILL)
    with pytest.raises(SiftProcessError, match="crashed or killed"):
        sift.extract(textured_image(0))
    again, _ = sift.extract(textured_image(0))
    assert np.array_equal(again, first)
    sift.close()


def test_a_call_cut_short_never_hands_its_reply_to_the_next(monkeypatch):
    sift = SiftProcess(max_keypoints=100, upright=False, num_threads=1)
    load = pickle.load

    def interrupted(stream):
        monkeypatch.setattr(pickle, "load", load)
        raise KeyboardInterrupt  # Ctrl-C while the caller waits for the child's reply

    monkeypatch.setattr(pickle, "load", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sift.extract(textured_image(0))
    rows, _ = sift.extract(textured_image(1))
    assert np.array_equal(rows, sift_in_this_process(textured_image(1), max_keypoints=100)[0])
    sift.close()


def test_ctrl_c_in_the_terminal_reaches_the_caller_only():
    # The terminal sends Ctrl-C to its foreground process group; the child has a session of its own.
    sift = SiftProcess(max_keypoints=100, upright=False, num_threads=1)
    sift.extract(textured_image(0))
    assert os.getpgid(sift._child.pid) != os.getpgid(0)
    sift.close()
