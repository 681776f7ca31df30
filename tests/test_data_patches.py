"""The patch crop follows COLMAP's keypoint convention (synthetic images, no dataset needed)."""

import numpy as np
import pycolmap
import pytest
import torch
from kornia.feature import extract_patches_from_pyramid

from msk.data.patches import (
    ImagePyramid,
    crop_patches,
    keypoint_orientation,
    keypoint_scale,
    oriented_lafs,
    upright_lafs,
)

PS, WINDOW = 32, 12.0


def _similarity(x: float, y: float, scale: float, angle: float) -> np.ndarray:
    """A COLMAP keypoint (1, 6): corner-origin x, y and the affine frame scale * R(angle)."""
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    return np.array([[x, y, c, -s, s, c]], np.float32)


def _centroid(patch: np.ndarray) -> tuple[float, float]:
    w = patch.astype(np.float64) - np.median(patch)
    w = np.clip(w, 0, None)
    rows, cols = np.indices(patch.shape)
    return (w * cols).sum() / w.sum(), (w * rows).sum() / w.sum()


def _dot_image(cx: float, cy: float, shape=(80, 100), sigma=1.2) -> np.ndarray:
    """A bright Gaussian dot centred at (cx, cy) in centre-origin pixel coordinates."""
    rows, cols = np.indices(shape)
    return (20 + 220 * np.exp(-((cols - cx) ** 2 + (rows - cy) ** 2) / (2 * sigma**2))).astype(np.uint8)


@pytest.mark.parametrize("cx, cy", [(52.0, 37.0), (40.3, 21.8)])
def test_crop_is_centred_on_the_colmap_keypoint(cx, cy):
    # COLMAP puts the centre of pixel (col, row) at (col + 0.5, row + 0.5).
    image = _dot_image(cx, cy)
    patch = crop_patches(image, oriented_lafs(_similarity(cx + 0.5, cy + 0.5, 2.0, 0.3), WINDOW), PS)[0]
    centre = (PS - 1) / 2
    # Half a pixel of error in the image is 0.67 patch pixels here.
    assert _centroid(patch) == pytest.approx((centre, centre), abs=0.1)
    upright = crop_patches(image, upright_lafs(np.array([[cx + 0.5, cy + 0.5]]), np.array([2.0]), WINDOW), PS)[0]
    assert _centroid(upright) == pytest.approx((centre, centre), abs=0.1)


def test_scale_and_orientation_are_colmaps():
    rng = np.random.default_rng(0)
    kps = np.concatenate([rng.uniform(0, 500, (20, 2)), rng.normal(0, 3, (20, 4))], axis=1).astype(np.float32)
    expected = [
        pycolmap.FeatureKeypoint(x=k[0], y=k[1], a11=k[2], a12=k[3], a21=k[4], a22=k[5]) for k in kps.astype(float)
    ]
    np.testing.assert_allclose(keypoint_scale(kps), [k.compute_scale() for k in expected], rtol=1e-5)
    np.testing.assert_allclose(keypoint_orientation(kps), [k.compute_orientation() for k in expected], atol=1e-5)


def test_patch_window_is_window_times_scale():
    lafs = oriented_lafs(_similarity(10.5, 20.5, 3.0, np.pi / 2), WINDOW)
    assert torch.allclose(lafs[0], torch.tensor([[0.0, -18.0, 10.0], [18.0, 0.0, 20.0]], dtype=lafs.dtype), atol=1e-5)


def test_crop_turns_with_the_keypoint():
    """Rotating the image by 90 degrees and the keypoint with it gives the same patch.

    A crop that mixed up the axes of the COLMAP frame, its orientation sign or the half-pixel
    offset would sample different image content in the two images.
    """
    rng = np.random.default_rng(1)
    h, w = 90, 120
    image = np.kron(rng.integers(0, 256, (h // 3, w // 3)), np.ones((3, 3))).astype(np.uint8)
    rotated = np.ascontiguousarray(np.rot90(image))  # rotated[i, j] = image[j, w - 1 - i]
    # In centre-origin pixels (x', y') = (y, w - 1 - x); with COLMAP's offset: (y_c, w - x_c).
    turn = np.array([[0.0, 1.0], [-1.0, 0.0]])
    kp = _similarity(61.3, 40.6, 2.5, 0.5)
    kp_rot = kp.copy()
    kp_rot[0, :2] = [kp[0, 1], w - kp[0, 0]]
    kp_rot[0, 2:] = (turn @ kp[0, 2:].reshape(2, 2)).reshape(4)
    patch = crop_patches(image, oriented_lafs(kp, WINDOW), PS).astype(int)
    patch_rot = crop_patches(rotated, oriented_lafs(kp_rot, WINDOW), PS).astype(int)
    assert np.abs(patch - patch_rot).max() <= 1
    # The test has the power to catch a wrong offset: a one-pixel shift changes the patch a lot.
    shifted = kp_rot.copy()
    shifted[0, 0] += 1
    assert np.abs(patch - crop_patches(rotated, oriented_lafs(shifted, WINDOW), PS)).mean() > 10


def _render(k: int, shape: tuple[int, int]) -> np.ndarray:
    """A smooth pattern sampled at the pixel centres of a k-times upsampled grid (corner origin)."""
    rows, cols = np.indices((shape[0] * k, shape[1] * k))
    u, v = (cols + 0.5) / k, (rows + 0.5) / k
    f = np.sin(u / 1.7) * np.cos(v / 2.3) + 0.6 * np.sin((u + 2 * v) / 3.1)
    return (128 + 60 * f).astype(np.float32)


def _crop_float(image: np.ndarray, kps: np.ndarray) -> np.ndarray:
    img = torch.from_numpy(image)[None, None]
    return extract_patches_from_pyramid(img, oriented_lafs(kps, WINDOW)[None].float(), PS)[0, 0, 0].numpy()


def test_crop_commutes_with_resizing():
    """COLMAP coordinates scale by plain multiplication: the keypoint (x, y, sigma) of an image is
    (2x, 2y, 2 sigma) in the same image at twice the resolution, and shows the same patch."""
    small, large = _render(1, (60, 70)), _render(2, (60, 70))
    kp = _similarity(33.2, 27.7, 1.5, 0.4)
    kp2 = kp.copy()
    kp2[0] *= 2
    error = np.abs(_crop_float(small, kp) - _crop_float(large, kp2)).mean()
    # Treating COLMAP coordinates as centre-origin misplaces the two crops by different amounts.
    wrong = kp.copy()
    wrong[0, :2] += 0.5
    wrong2 = kp2.copy()
    wrong2[0, :2] += 0.5
    wrong_error = np.abs(_crop_float(small, wrong) - _crop_float(large, wrong2)).mean()
    assert error < 2.0  # bilinear interpolation of the two samplings (grey levels of 0..255)
    assert wrong_error > 3 * error


@pytest.mark.parametrize("patch_size", [20, 32])
def test_crop_is_kornias_pyramid_crop(patch_size):
    """The training set was cut with kornia's extract_patches_from_pyramid; crop_patches cuts the same patches,
    from small keypoints (level 0) to large ones (coarse levels, clamped), inside and across the border."""
    rng = np.random.default_rng(2)
    image = np.kron(rng.integers(0, 256, (75, 100)), np.ones((4, 4))).astype(np.uint8)  # 300x400
    image = (0.5 * image + 0.5 * _render(1, (300, 400))).astype(np.uint8)
    count = 400
    xy = rng.uniform([-20, -20], [420, 320], (count, 2))
    sigma = 2 ** rng.uniform(-1, 6, count)
    angle = rng.uniform(-np.pi, np.pi, count)
    frames = sigma[:, None] * np.stack([np.cos(angle), -np.sin(angle), np.sin(angle), np.cos(angle)], axis=1)
    lafs = oriented_lafs(np.concatenate([xy, frames], axis=1).astype(np.float32), WINDOW)
    expected = extract_patches_from_pyramid(torch.from_numpy(image).float()[None, None], lafs[None].float(), patch_size)
    expected = expected[0, :, 0].round().clamp(0, 255).to(torch.uint8).numpy().astype(int)
    pyramid = ImagePyramid(image)
    for source in (image, pyramid, pyramid):  # a pyramid serves several crops, also of other sizes
        crop_patches(pyramid, lafs[:5], 48)
        difference = np.abs(crop_patches(source, lafs, patch_size).astype(int) - expected)
        # Float rounding of the sampling positions may move a grey level across .5.
        assert difference.max() <= 1 and (difference > 0).mean() < 1e-3
