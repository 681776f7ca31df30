"""Sub-pixel refinement of detections to the blob centre at their scale (msk.refinement)."""

import numpy as np
import pytest

from colmap_plugin.keypoints import pixel_to_colmap
from msk.refinement import RefinementConf, refine_to_blob_centres

SIGMA = 3.0


def blob_image(centre_xy: np.ndarray, bright: bool) -> np.ndarray:
    """A grey (80, 96) uint8 image holding one Gaussian blob of scale SIGMA at pixel-centre coordinates."""
    rows, cols = np.mgrid[0:80, 0:96]
    blob = np.exp(-((cols - centre_xy[0]) ** 2 + (rows - centre_xy[1]) ** 2) / (2 * SIGMA**2))
    return (128 + (100 if bright else -100) * blob).round().astype(np.uint8)


@pytest.mark.parametrize("bright", [True, False])
def test_a_detection_near_a_blob_moves_to_its_sub_pixel_centre(bright):
    centre = np.array([45.3, 38.6])  # pixel-centre coordinates, off the pixel grid
    truth = pixel_to_colmap(centre)
    detections = (truth + np.array([[0.4, -0.3], [-0.5, -0.2], [0.1, 0.5]]) * SIGMA).astype(np.float32)
    refined = refine_to_blob_centres(blob_image(centre, bright), detections, np.full(3, SIGMA, np.float32))
    assert np.abs(detections - truth).max() > 1.0
    assert np.abs(refined - truth).max() < 0.15


def test_a_detection_far_from_the_blob_moves_at_most_the_search_radius():
    conf = RefinementConf()
    centre = np.array([45.0, 38.0])
    far = (pixel_to_colmap(centre) + np.array([[3.0, 0.0]]) * SIGMA).astype(np.float32)
    refined = refine_to_blob_centres(blob_image(centre, True), far, np.full(1, SIGMA, np.float32), conf)
    assert np.linalg.norm(refined - far) <= conf.radius * conf.step * SIGMA * np.sqrt(2) + 1e-4


def test_no_detections_refine_to_none():
    image = blob_image(np.array([40.0, 40.0]), True)
    refined = refine_to_blob_centres(image, np.zeros((0, 2), np.float32), np.zeros(0, np.float32))
    assert refined.shape == (0, 2)
