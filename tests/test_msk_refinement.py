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


def test_refinement_reaches_half_a_scale_and_keeps_symmetric_or_flat_positions():
    conf = RefinementConf()
    reach = (conf.radius + 0.5) * conf.step * SIGMA
    centre = np.array([45.3, 38.6])
    truth = pixel_to_colmap(centre)
    near_reach = (truth + np.array([[0.9 * reach, 0.0]])).astype(np.float32)
    refined = refine_to_blob_centres(blob_image(centre, True), near_reach, np.full(1, SIGMA, np.float32), conf)
    assert np.abs(refined - truth).max() < 0.15
    # On a straight vertical edge the response does not change along y: the detection keeps its row.
    edge = np.where(np.arange(96)[None, :] < 48, 60, 200).repeat(80, axis=0).astype(np.uint8)
    on_edge = np.array([[48.3, 40.5]], np.float32)
    refined = refine_to_blob_centres(edge, on_edge, np.full(1, SIGMA, np.float32), conf)
    assert refined[0, 1] == pytest.approx(on_edge[0, 1], abs=1e-4)
    flat = np.full((80, 96), 128, np.uint8)
    assert np.array_equal(
        refine_to_blob_centres(flat, truth[None].astype(np.float32), np.full(1, SIGMA, np.float32)),
        truth[None].astype(np.float32),
    )


def test_refined_positions_stay_inside_the_image():
    centre = np.array([0.0, 40.0])  # a blob cut by the left border
    detection = pixel_to_colmap(centre + np.array([0.5, 0.0]))[None].astype(np.float32)
    refined = refine_to_blob_centres(blob_image(centre, True), detection, np.full(1, 8.0, np.float32))
    assert (refined >= 0).all() and (refined <= [96, 80]).all()
