"""Sub-pixel, sub-scale refinement of detections to the LoG extremum over position and scale (msk.refinement)."""

import numpy as np
import pytest
import torch

from colmap_plugin.keypoints import pixel_to_colmap
from msk.refinement import (
    DUPLICATE_DISTANCE,
    DUPLICATE_OCTAVES,
    RefinementConf,
    converged_duplicates,
    log_kernels,
    parabola_at,
    quadratic_maximum,
    refine_blobs,
)

SIGMA = 3.0


def blob_image(centre_xy: np.ndarray, bright: bool) -> np.ndarray:
    """A grey (80, 96) uint8 image holding one Gaussian blob of scale SIGMA at pixel-centre coordinates."""
    rows, cols = np.mgrid[0:80, 0:96]
    blob = np.exp(-((cols - centre_xy[0]) ** 2 + (rows - centre_xy[1]) ** 2) / (2 * SIGMA**2))
    return (128 + (100 if bright else -100) * blob).round().astype(np.uint8)


def scales(count: int, sigma: float = SIGMA) -> np.ndarray:
    return np.full(count, sigma, np.float32)


@pytest.mark.parametrize("bright", [True, False])
@pytest.mark.parametrize("detected_scale", [2.7, 3.3])  # within the two steps' reach of the blob's scale
def test_a_detection_near_a_blob_moves_to_its_sub_pixel_centre_and_scale(bright, detected_scale):
    centre = np.array([45.3, 38.6])  # pixel-centre coordinates, off the pixel grid
    truth = pixel_to_colmap(centre)
    detections = (truth + np.array([[0.4, -0.3], [-0.5, -0.2], [0.1, 0.5]]) * SIGMA).astype(np.float32)
    detected_scales = scales(3, detected_scale)
    refined, refined_scales = refine_blobs(blob_image(centre, bright), detections, detected_scales)
    assert np.abs(detections - truth).max() > 1.0
    assert np.abs(refined - truth).max() < 0.05
    # The scale-normalised LoG of a Gaussian blob peaks at the blob's scale.
    np.testing.assert_allclose(refined_scales, SIGMA, rtol=0.03)
    assert np.array_equal(detected_scales, scales(3, detected_scale))  # the inputs are left as they were


def test_one_step_moves_by_the_scale_the_patch_was_cut_at():
    centre = np.array([45.3, 38.6])
    truth = pixel_to_colmap(centre)
    detections = (truth + np.array([[1.0, 0.0], [0.0, -1.0], [0.7, 0.7]])).astype(np.float32)
    refined, refined_scales = refine_blobs(
        blob_image(centre, True), detections, scales(3, 3.8), RefinementConf(iterations=1)
    )
    assert np.abs(refined - truth).max() < 0.05
    assert (refined_scales < 3.8).all()


def test_one_step_moves_a_detection_far_from_the_blob_towards_it_by_at_most_its_bounds():
    conf = RefinementConf(iterations=1)
    centre = np.array([45.0, 38.0])
    far = (pixel_to_colmap(centre) + np.array([[3.0, 0.0]]) * SIGMA).astype(np.float32)
    refined, refined_scales = refine_blobs(blob_image(centre, True), far, scales(1), conf)
    assert refined[0, 0] < far[0, 0]
    assert np.abs(refined - far).max() <= (conf.radius + 0.5) * conf.step * SIGMA + 1e-4
    assert abs(np.log2(refined_scales[0] / SIGMA)) <= conf.scale_step / 2 + 1e-6


def test_log_kernels_respond_zero_to_flat_and_sloped_patches():
    kernels, side = log_kernels(RefinementConf())
    ramp = np.add.outer(np.arange(side), 2 * np.arange(side)).astype(np.float32).reshape(1, -1)
    responses = (torch.from_numpy(ramp) @ kernels).numpy()
    np.testing.assert_allclose(kernels.sum(dim=0).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(responses, 0, atol=1e-2)  # a blob of contrast 100 responds ~1,000


def test_no_detections_refine_to_none():
    image = blob_image(np.array([40.0, 40.0]), True)
    refined, refined_scales = refine_blobs(image, np.zeros((0, 2), np.float32), np.zeros(0, np.float32))
    assert refined.shape == (0, 2) and refined_scales.shape == (0,)


def test_edges_keep_their_position_along_the_edge_and_flat_patches_keep_everything():
    # On a straight vertical edge the response does not change along y: the detection keeps its row.
    edge = np.where(np.arange(96)[None, :] < 48, 60, 200).repeat(80, axis=0).astype(np.uint8)
    on_edge = np.array([[48.3, 40.5]], np.float32)
    refined, _ = refine_blobs(edge, on_edge, scales(1))
    assert refined[0, 1] == pytest.approx(on_edge[0, 1], abs=1e-4)
    flat = np.full((80, 96), 128, np.uint8)
    detection = np.array([[45.8, 39.1]], np.float32)
    refined, refined_scales = refine_blobs(flat, detection, scales(1))
    assert np.array_equal(refined, detection) and np.array_equal(refined_scales, scales(1))


def test_refined_positions_stay_inside_the_image():
    centre = np.array([0.0, 40.0])  # a blob cut by the left border
    detection = pixel_to_colmap(centre + np.array([0.5, 0.0]))[None].astype(np.float32)
    refined, _ = refine_blobs(blob_image(centre, True), detection, scales(1, 8.0))
    assert (refined >= 0).all() and (refined <= [96, 80]).all()


def test_responses_between_scales_follow_the_parabola_through_the_three_scales():
    a, b, c = torch.tensor([-2.0, 0.5]), torch.tensor([1.0, -3.0]), torch.tensor([4.0, 2.0])
    samples = [a * x**2 + b * x + c for x in (-1.0, 0.0, 1.0)]
    for t in (-0.5, 0.0, 0.3):
        torch.testing.assert_close(parabola_at(*samples, torch.tensor(t)), a * t**2 + b * t + c)


def quadratic_samples(curvature: torch.Tensor, maximum_at: torch.Tensor) -> torch.Tensor:
    """Samples (N, 3, 3, 3), indexed (scale, y, x) at -1, 0, +1, of -(p - m)^T C (p - m) / 2 for C (N, 3, 3)
    and m (N, 3) in (x, y, scale)."""
    steps = torch.arange(-1.0, 2.0)
    scale, y, x = torch.meshgrid(steps, steps, steps, indexing="ij")
    points = torch.stack([x, y, scale], dim=-1)  # (3, 3, 3, 3): (x, y, scale) of each sample
    away = points[None] - maximum_at[:, None, None, None]
    return -0.5 * torch.einsum("nsyxi,nij,nsyxj->nsyx", away, curvature, away)


def test_the_quadratic_through_the_samples_finds_their_maximum_with_the_axes_coupled():
    generator = torch.Generator().manual_seed(0)
    mixing = torch.randn(6, 3, 3, generator=generator, dtype=torch.float64)
    curvature = mixing @ mixing.transpose(1, 2) + 0.5 * torch.eye(3, dtype=torch.float64)  # positive definite, coupled
    maximum_at = torch.rand(6, 3, generator=generator, dtype=torch.float64) - 0.5
    torch.testing.assert_close(quadratic_maximum(quadratic_samples(curvature, maximum_at)), maximum_at)
    # A minimum (a blob of the other kind) or a saddle has no maximum to find.
    assert quadratic_maximum(-quadratic_samples(curvature, maximum_at)).isnan().all()
    saddle = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)).expand(6, 3, 3)  # a maximum in x, y only
    assert quadratic_maximum(quadratic_samples(saddle, maximum_at)).isnan().all()


def test_two_detections_of_one_blob_refine_onto_it_and_the_weaker_is_the_duplicate():
    image = blob_image(np.array([40.0, 30.0]), bright=True)
    detected = pixel_to_colmap(np.array([[39.0, 29.5], [41.2, 30.8], [70.0, 60.0]], np.float32))
    xy, sigma = refine_blobs(image, detected, np.array([2.8, 3.2, 3.0], np.float32))
    assert np.linalg.norm(xy[0] - xy[1]) < 0.05 * SIGMA  # both on the blob's centre
    np.testing.assert_array_equal(converged_duplicates(xy, sigma), [False, True, False])  # strongest first


def test_duplicates_are_keypoints_close_in_position_and_scale_to_a_stronger_one():
    xy = np.array([[10, 10], [10.8, 10], [11.2, 10], [30, 30], [30.4, 30], [50, 50], [50.1, 50]], np.float32)
    sigma = np.array([1, 1, 1, 2, 2 * 2**0.6, 8, 8], np.float32)
    # 1: 0.8 scales from 0, a twin. 2: 1.2 scales from 0, but 0.4 from 1, which is dropped yet still
    # stronger: a twin too. 4: 0.2 scales from 3, but 0.6 octaves larger. 6: a twin of 5 at 0.0125 scales.
    np.testing.assert_array_equal(converged_duplicates(xy, sigma), [False, True, True, False, False, False, True])
    assert converged_duplicates(np.zeros((0, 2), np.float32), np.zeros(0, np.float32)).shape == (0,)


def test_duplicate_search_along_x_finds_what_comparing_every_pair_finds():
    rng = np.random.default_rng(0)
    xy = (rng.random((3000, 2)) * [400, 300]).astype(np.float32)
    sigma = (1.3 * 2 ** (rng.random(3000) * 5)).astype(np.float32)  # 1.3 to 42 px: wide windows too
    xy[1::5], sigma[1::5] = xy[::5][:600] + 0.3, sigma[::5][:600] * 1.05  # planted twins
    distance = np.linalg.norm(xy[:, None] - xy[None], axis=2)
    near = distance < DUPLICATE_DISTANCE * np.minimum(sigma[:, None], sigma[None])
    near &= np.abs(np.log2(sigma[:, None] / sigma[None])) < DUPLICATE_OCTAVES
    expected = (near & np.tri(3000, k=-1, dtype=bool)).any(axis=1)  # a keypoint before it
    assert expected[1::5].all()
    np.testing.assert_array_equal(converged_duplicates(xy, sigma), expected)
