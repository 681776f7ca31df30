"""Shared fixtures: a synthetic image scene made by pycolmap, and the real datasets."""

import zlib  # noqa: F401  (before pycolmap: see colmap_plugin/__init__.py)
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


def render_synthetic_scene(root: Path, num_images: int) -> Path:
    """`num_images` 640x480 renderings of 400 textured 3D points into `root/images`; returns root."""
    options = pycolmap.SyntheticDatasetOptions()
    options.num_rigs, options.num_frames_per_rig, options.num_points3D = 1, num_images, 400
    options.camera_width, options.camera_height = 640, 480
    options.camera_params = [800.0, 320.0, 240.0, 0.0]
    pycolmap.set_random_seed(0)
    reconstruction = pycolmap.synthesize_dataset(options)
    (root / "images").mkdir()
    pycolmap.synthesize_images(pycolmap.SyntheticImageOptions(), reconstruction, root / "images")
    return root


@pytest.fixture(scope="session")
def synthetic_scene(tmp_path_factory) -> Path:
    """Six synthetic renderings (images in `images/` below the path)."""
    return render_synthetic_scene(tmp_path_factory.mktemp("synthetic"), 6)
