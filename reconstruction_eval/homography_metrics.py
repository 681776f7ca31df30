"""Keypoint and match quality on planar image pairs with a ground-truth homography.

All coordinates are pixel-centre-origin (the centre of the top-left pixel is (0, 0)), the
convention of the ground-truth files; COLMAP keypoints are converted by the caller with
`colmap_plugin.keypoints.colmap_to_pixel`.
"""

import numpy as np
import torch
from kornia.geometry.transform import warp_perspective

MMA_THRESHOLDS = tuple(range(1, 11))  # pixels
CORNER_THRESHOLDS = (1, 3, 5)  # pixels


def warp_points(points: np.ndarray, homography: np.ndarray) -> np.ndarray:
    """Points (N, 2) mapped by a (3, 3) homography (any scale or sign); points sent to infinity become inf or nan."""
    homogeneous = np.column_stack([points, np.ones(len(points))]) @ homography.T
    with np.errstate(divide="ignore", invalid="ignore"):
        return homogeneous[:, :2] / homogeneous[:, 2:]


def warp_image(image: np.ndarray, homography: np.ndarray) -> np.ndarray:
    """The grey uint8 image (H, W) seen through a (3, 3) homography: pixel p of the result is pixel
    homography^-1 p of `image` (bilinear, black outside), same size."""
    tensor = torch.from_numpy(image).float()[None, None]
    matrix = torch.from_numpy(homography).float()[None]
    warped = warp_perspective(tensor, matrix, image.shape, align_corners=True)
    return warped[0, 0].round().clamp(0, 255).to(torch.uint8).numpy()


def match_errors(points0: np.ndarray, points1: np.ndarray, homography: np.ndarray) -> np.ndarray:
    """Reprojection error (K,) of matched points (K, 2) in image 0 and (K, 2) in image 1, in image 1.

    A point the homography sends to infinity has error nan, which no threshold accepts.
    """
    return np.linalg.norm(warp_points(points0, homography) - points1, axis=1)


def mean_matching_accuracy(errors: np.ndarray, thresholds: tuple[float, ...] = MMA_THRESHOLDS) -> dict[float, float]:
    """Fraction of matches with an error at or below each threshold; 0 without matches."""
    return {t: float(np.mean(errors <= t)) if len(errors) else 0.0 for t in thresholds}


def inside(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N,) whether points (N, 2) fall inside an image of size (W, H)."""
    width, height = size
    x, y = points[:, 0], points[:, 1]
    return (x >= -0.5) & (x < width - 0.5) & (y >= -0.5) & (y < height - 0.5)


def repeatability(
    keypoints0: np.ndarray,
    keypoints1: np.ndarray,
    homography: np.ndarray,
    size0: tuple[int, int],
    size1: tuple[int, int],
    threshold: float = 3.0,
) -> float | None:
    """SuperPoint's repeatability of keypoints (N, 2) and (M, 2) under `homography` (0 to 1).

    Only keypoints visible in both images count: those of image 0 that land inside image 1,
    and those of image 1 whose inverse image lies inside image 0. In image 1, a keypoint is
    repeated when one of the other image's is within `threshold` pixels; the score is the
    repeated keypoints of both images over all counted ones. None when none are visible.
    """
    warped0 = warp_points(keypoints0, homography)
    visible0 = warped0[inside(warped0, size1)]
    visible1 = keypoints1[inside(warp_points(keypoints1, np.linalg.inv(homography)), size0)]
    if len(visible0) + len(visible1) == 0:
        return None
    if len(visible0) == 0 or len(visible1) == 0:
        return 0.0
    distances = np.linalg.norm(visible0[:, None] - visible1[None], axis=2)  # (N', M')
    repeated = np.sum(distances.min(axis=1) <= threshold) + np.sum(distances.min(axis=0) <= threshold)
    return float(repeated / (len(visible0) + len(visible1)))


def image_corners(size: tuple[int, int]) -> np.ndarray:
    """The 4 outer corners (4, 2) of an image of size (W, H), in pixel-centre coordinates."""
    width, height = size
    return np.array([[-0.5, -0.5], [width - 0.5, -0.5], [width - 0.5, height - 0.5], [-0.5, height - 0.5]])


def corner_error(estimate: np.ndarray | None, truth: np.ndarray, size0: tuple[int, int]) -> float:
    """Mean distance in image 1 between the corners of image 0 mapped by the estimated and the true homography.

    inf when no homography was estimated.
    """
    if estimate is None:
        return np.inf
    corners = image_corners(size0)
    return float(np.mean(np.linalg.norm(warp_points(corners, estimate) - warp_points(corners, truth), axis=1)))


def homography_accuracy(
    corner_errors: np.ndarray, thresholds: tuple[float, ...] = CORNER_THRESHOLDS
) -> dict[float, float]:
    """Fraction of pairs (P,) whose mean corner error is at or below each threshold."""
    return {t: float(np.mean(np.asarray(corner_errors) <= t)) for t in thresholds}
