"""Shared fixtures: a synthetic image scene made by pycolmap, and the real datasets."""

from pathlib import Path

import pycolmap
import pytest

from colmap_plugin.datasets import datasets_root


@pytest.fixture(scope="session")
def datasets() -> Path:
    root = datasets_root()
    if not (root / "eval").is_dir():
        pytest.skip(f"datasets not found at {root} (set MSK_DATASETS)")
    return root


@pytest.fixture(scope="session")
def synthetic_scene(tmp_path_factory) -> Path:
    """Six 640x480 renderings of 400 textured 3D points (images in `images/` below the path)."""
    root = tmp_path_factory.mktemp("synthetic")
    options = pycolmap.SyntheticDatasetOptions()
    options.num_rigs = 1
    options.num_frames_per_rig = 6
    options.num_points3D = 400
    options.camera_width, options.camera_height = 640, 480
    options.camera_params = [800.0, 320.0, 240.0, 0.0]
    pycolmap.set_random_seed(0)
    reconstruction = pycolmap.synthesize_dataset(options)
    (root / "images").mkdir()
    pycolmap.synthesize_images(pycolmap.SyntheticImageOptions(), reconstruction, root / "images")
    return root
