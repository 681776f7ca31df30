"""The one place where keypoint coordinate conventions are converted.

COLMAP stores keypoints with the corner origin: the top-left pixel covers [0, 1) x [0, 1),
so its centre is (0.5, 0.5). Array indexing (and most networks, kornia, grid sampling with
align_corners=True) use the centre origin: the centre of pixel (row 0, col 0) is (0, 0).
Corner-origin coordinates rescale by plain multiplication, which is why every stored
keypoint (database and feature store) uses them.
"""

import numpy as np
import torch

COLMAP_PIXEL_OFFSET = 0.5

ArrayLike = np.ndarray | torch.Tensor


def pixel_to_colmap(xy: ArrayLike) -> ArrayLike:
    """Centre-origin pixel coordinates (..., 2) to COLMAP corner-origin coordinates."""
    return xy + COLMAP_PIXEL_OFFSET


def colmap_to_pixel(xy: ArrayLike) -> ArrayLike:
    """COLMAP corner-origin coordinates (..., 2) to centre-origin pixel coordinates."""
    return xy - COLMAP_PIXEL_OFFSET


def rescale_colmap(xy: ArrayLike, scale_xy: tuple[float, float]) -> ArrayLike:
    """Map corner-origin coordinates (..., 2) from a resized image back to the original.

    `scale_xy` is (original_width / resized_width, original_height / resized_height).
    """
    if isinstance(xy, torch.Tensor):
        return xy * torch.tensor(scale_xy, dtype=xy.dtype, device=xy.device)
    return xy * np.asarray(scale_xy, dtype=xy.dtype)


def affine_keypoints(xy: np.ndarray, scales: np.ndarray, orientations: np.ndarray) -> np.ndarray:
    """(N, 6) COLMAP keypoints [x, y, a11, a12, a21, a22] of similarity frames.

    As COLMAP's FeatureKeypoint(x, y, scale, orientation): the columns of A are the keypoint's
    x and y axes, A = scale * [[cos, -sin], [sin, cos]].
    """
    cos, sin = np.cos(orientations) * scales, np.sin(orientations) * scales
    return np.column_stack([xy, cos, -sin, sin, cos]).astype(np.float32)
