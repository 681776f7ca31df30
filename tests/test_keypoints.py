"""The COLMAP keypoint convention: pixel centres at +0.5, rescaling by multiplication."""

import numpy as np
import torch

from colmap_plugin.features import create_extractor
from colmap_plugin.images import read_image
from colmap_plugin.keypoints import colmap_to_pixel, pixel_to_colmap, rescale_colmap


def blob_image(width: int, height: int, centre_xy: tuple[float, float], sigma: float) -> np.ndarray:
    """A bright Gaussian blob on grey, centred on array coordinates (col, row) = centre_xy."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    blob = np.exp(-((cols - centre_xy[0]) ** 2 + (rows - centre_xy[1]) ** 2) / (2 * sigma**2))
    return (20 + 200 * blob).astype(np.uint8)


def test_top_left_pixel_centre_is_half_in_colmap():
    assert np.allclose(pixel_to_colmap(np.array([[0.0, 0.0]])), [[0.5, 0.5]])
    assert torch.allclose(colmap_to_pixel(torch.tensor([[0.5, 10.5]])), torch.tensor([[0.0, 10.0]]))


def test_rescaling_maps_pixel_areas_exactly():
    # The centre of pixel 0 of a half-size image is the corner between full-size pixels 0 and 1.
    assert np.allclose(rescale_colmap(np.array([[0.5, 0.5]]), (2.0, 2.0)), [[1.0, 1.0]])
    assert np.allclose(rescale_colmap(np.array([[320.0, 240.0]]), (2.0, 4.0)), [[640.0, 960.0]])


def test_sift_reports_blob_centre_in_colmap_convention():
    features = create_extractor("sift").extract(blob_image(96, 64, (40, 30), sigma=3))
    assert len(features) > 0
    assert np.allclose(features.keypoints, [[40.5, 30.5]], atol=0.05)


def test_keypoints_of_a_shrunk_image_land_on_the_full_resolution_blob(tmp_path):
    import pycolmap

    path = tmp_path / "blob.png"
    pycolmap.Bitmap.from_array(blob_image(400, 300, (201, 151), sigma=8)).write(path)
    image = read_image(path, max_size=200)
    assert image.gray.shape == (150, 200) and image.original_size == (400, 300)
    features = create_extractor("sift").extract(image.gray).rescaled(image.scale_xy)
    assert np.allclose(colmap_to_pixel(features.keypoints), [[201, 151]], atol=0.3)
