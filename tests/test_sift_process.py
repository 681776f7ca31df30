"""COLMAP's SIFT in a child process: the same features as in the caller's, and a child that dies is replaced."""

import os
import signal

import numpy as np
import pycolmap
import pytest

from colmap_plugin.sift import SiftExtractor
from colmap_plugin.sift_process import SiftProcess, SiftProcessError, extract_sift, sift_options


@pytest.fixture(scope="module")
def textured_image() -> np.ndarray:
    rng = np.random.default_rng(0)
    noise = rng.random((40, 60))
    return (np.kron(noise, np.ones((6, 6))) * 255).astype(np.uint8)  # 240x360, blocks of 6 px


def test_child_extracts_what_pycolmap_extracts_in_the_caller(textured_image):
    features = SiftExtractor(max_keypoints=500).extract(textured_image)
    options = sift_options(max_keypoints=500, upright=False, num_threads=-1)
    rows, descriptors = extract_sift(pycolmap.FeatureExtractor.create(options, pycolmap.Device.cpu), textured_image)
    assert len(features) > 100
    assert np.array_equal(features.keypoints, rows[:, :2]) and np.array_equal(features.scales, rows[:, 2])
    assert np.array_equal(features.orientations, rows[:, 3]) and np.array_equal(features.descriptors, descriptors)


def test_a_killed_child_fails_one_image_and_the_next_starts_a_new_one(textured_image):
    sift = SiftProcess(max_keypoints=500, upright=False, num_threads=1)
    first, _ = sift.extract(textured_image)
    os.kill(sift._child.pid, signal.SIGKILL)
    with pytest.raises(SiftProcessError, match="crashed or killed"):
        sift.extract(textured_image)
    again, _ = sift.extract(textured_image)
    assert np.array_equal(again, first)
    sift.close()


def test_ctrl_c_is_left_to_the_caller(textured_image):
    # Ctrl-C in a terminal reaches the child too: it must finish its image, the caller decides what stops.
    sift = SiftProcess(max_keypoints=500, upright=False, num_threads=1)
    sift.extract(textured_image)
    child = sift._child
    os.kill(child.pid, signal.SIGINT)
    rows, _ = sift.extract(textured_image)
    assert len(rows) > 100
    sift.close()
    assert child.returncode == 0  # ended by closing its input, not killed
