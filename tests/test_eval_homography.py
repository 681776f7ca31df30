"""Homography metrics on hand-made points and homographies with known answers."""

import numpy as np
import pytest

from reconstruction_eval.homography_metrics import (
    corner_error,
    homography_accuracy,
    match_errors,
    mean_matching_accuracy,
    repeatability,
    warp_image,
    warp_points,
)
from reconstruction_eval.rotation_bench import rotate_gray, rotation_matrix

SHIFT = np.array([[1.0, 0, 10], [0, 1, -5], [0, 0, 1]])  # x + 10, y - 5


def test_warp_points_is_projective_and_ignores_the_scale_of_h():
    homography = np.array([[2.0, 0, 0], [0, 2, 0], [0, 0.01, 1]])
    points = np.array([[0.0, 0], [10, 100]])
    np.testing.assert_allclose(warp_points(points, homography), [[0, 0], [10, 100]])  # w = 2 at y = 100
    np.testing.assert_allclose(warp_points(points, -3 * homography), warp_points(points, homography))


def test_warped_image_moves_its_pixels_where_warp_points_sends_them():
    image = np.zeros((40, 60), np.uint8)
    image[12, 20] = 200
    warped = warp_image(image, SHIFT)
    assert warped.shape == image.shape
    assert np.argwhere(warped).tolist() == [[12 - 5, 20 + 10]]  # (row, col) = (y, x) of warp_points((20, 12))
    assert warped[7, 30] == 200


def test_match_errors_and_mma_of_known_offsets():
    points0 = np.array([[0.0, 0], [50, 50], [100, 20], [7, 7]])
    offsets = np.array([[0.5, 0], [0, 2], [3, 4], [20, 0]])  # errors 0.5, 2, 5, 20 px
    errors = match_errors(points0, warp_points(points0, SHIFT) + offsets, SHIFT)
    np.testing.assert_allclose(errors, [0.5, 2, 5, 20])
    mma = mean_matching_accuracy(errors)
    assert list(mma) == list(range(1, 11))
    assert mma[1] == 0.25 and mma[2] == 0.5 and mma[4] == 0.5 and mma[5] == 0.75 and mma[10] == 0.75
    assert mean_matching_accuracy(np.zeros(0))[3] == 0.0


def test_repeatability_counts_only_keypoints_visible_in_both_images():
    size = (100, 100)
    # Image 0 keypoints; under SHIFT, (95, 50) lands at x = 105, outside image 1.
    keypoints0 = np.array([[10.0, 10], [50, 50], [80, 30], [95, 50]])
    # Image 1: two within 3 px of warped ones, one far from any, one whose preimage is outside image 0.
    keypoints1 = np.array([[21.0, 5], [60, 47], [40, 80], [5, 50]])
    # Visible: 3 of image 0 ((20, 5), (60, 45), (90, 25)) and 3 of image 1 ((5, 50) maps back to x = -5).
    # Repeated: (20, 5) and (60, 45) in image 0; (21, 5) and (60, 47) in image 1 -> 4 / 6.
    assert repeatability(keypoints0, keypoints1, SHIFT, size, size, threshold=3) == pytest.approx(4 / 6)
    assert repeatability(keypoints0, keypoints1, SHIFT, size, size, threshold=0.5) == 0.0
    assert repeatability(np.array([[99.0, 99]]), np.zeros((0, 2)), SHIFT, size, size) is None


def test_corner_error_of_a_known_shift_is_exact():
    # The estimate is off by a pure translation (3, 4): every corner is 5 px away.
    truth = np.array([[1.1, 0.1, 5], [0.05, 0.9, 2], [1e-4, 2e-4, 1]])
    estimate = np.array([[1.0, 0, 3], [0, 1, 4], [0, 0, 1]]) @ truth
    assert corner_error(estimate, truth, (640, 480)) == pytest.approx(5)
    assert corner_error(2 * truth, truth, (640, 480)) == pytest.approx(0)
    assert corner_error(None, truth, (640, 480)) == np.inf


def test_corner_error_of_a_scaled_estimate():
    # Scaling about the origin by 1.01: corners (-0.5, -0.5) ... (99.5, 49.5) move by 1 % of their norm.
    size = (100, 50)
    estimate = np.diag([1.01, 1.01, 1.0])
    corners = np.array([[-0.5, -0.5], [99.5, -0.5], [99.5, 49.5], [-0.5, 49.5]])
    assert corner_error(estimate, np.eye(3), size) == pytest.approx(0.01 * np.linalg.norm(corners, axis=1).mean())


def test_homography_accuracy_thresholds():
    accuracy = homography_accuracy(np.array([0.5, 1.0, 2.9, 4.0, np.inf]))
    assert accuracy == {1: pytest.approx(0.4), 3: pytest.approx(0.6), 5: pytest.approx(0.8)}


def test_turning_the_second_image_is_exact_at_90_degrees_and_its_matrix_says_where_pixels_go():
    image = np.random.default_rng(0).integers(0, 256, (6, 9), dtype=np.uint8)
    turned, matrix = rotate_gray(image, 90)
    assert np.array_equal(turned, np.rot90(image))  # counter-clockwise on screen
    assert np.allclose(matrix @ [8, 0, 1], [0, 0, 1])  # the top-right pixel becomes the top-left one

    dot = np.zeros((40, 60), np.uint8)
    dot[10:12, 44:46] = 255  # centred on pixel (44.5, 10.5)
    turned, matrix = rotate_gray(dot, 30)
    expected = (matrix @ [44.5, 10.5, 1])[:2]
    rows, cols = np.nonzero(turned > 100)
    assert np.allclose([cols.mean(), rows.mean()], expected, atol=0.5)
    assert turned.shape == (rotation_matrix((60, 40), 30)[1][1], rotation_matrix((60, 40), 30)[1][0])
