"""Oriented, scale-normalised patches around COLMAP keypoints, cropped in one batch per image.

A COLMAP keypoint is (x, y, a11, a12, a21, a22): its centre in corner-origin pixels and the
affine frame A = [[a11, a12], [a21, a22]] whose columns are the keypoint's x and y axes in the
image, each as long as the keypoint's scale (sigma, in full-resolution pixels).

A patch is kornia's local affine frame (LAF) crop of the frame scaled by `window / 2`: it tiles
the square of side `window * sigma` around the keypoint (SIFT's descriptor window is 4 bins of
3 sigma = 12 sigma), rotated so that the patch's x axis is the keypoint's orientation. The
keypoint lies exactly at the patch centre, ((PS - 1) / 2, (PS - 1) / 2) in array indices.
kornia samples from the pyramid level that matches the patch scale, so large keypoints are
anti-aliased rather than point-sampled.
"""

from dataclasses import dataclass

import numpy as np
import torch
from kornia.feature import extract_patches_from_pyramid

from colmap_plugin.keypoints import colmap_to_pixel


@dataclass(frozen=True)
class PatchConf:
    patch_size: int = 32  # pixels per side; 32x32 grey uint8 = 1 kB per patch
    window: float = 12.0  # patch side in units of the keypoint scale


def keypoint_scale(keypoints: np.ndarray) -> np.ndarray:
    """COLMAP's FeatureKeypoint::ComputeScale of (N, 6) keypoints: the mean axis length, (N,)."""
    a11, a12, a21, a22 = keypoints[:, 2], keypoints[:, 3], keypoints[:, 4], keypoints[:, 5]
    return 0.5 * (np.hypot(a11, a21) + np.hypot(a12, a22))


def keypoint_orientation(keypoints: np.ndarray) -> np.ndarray:
    """COLMAP's FeatureKeypoint::ComputeOrientation of (N, 6) keypoints, radians, (N,)."""
    return np.arctan2(keypoints[:, 4], keypoints[:, 2])


def oriented_lafs(keypoints: np.ndarray, window: float) -> torch.Tensor:
    """LAFs (N, 2, 3) in centre-origin pixels of the patches around (N, 6) COLMAP keypoints."""
    kps = torch.as_tensor(keypoints, dtype=torch.float64)
    affine = kps[:, 2:6].reshape(-1, 2, 2) * (window / 2)
    centre = colmap_to_pixel(kps[:, :2])
    return torch.cat([affine, centre[:, :, None]], dim=-1)


def upright_lafs(xy: np.ndarray, scale: np.ndarray, window: float) -> torch.Tensor:
    """LAFs (N, 2, 3) of axis-aligned patches at COLMAP points xy (N, 2) with scales (N,).

    Detector samples are upright: detection happens before any orientation is assigned.
    """
    xy_t = torch.as_tensor(xy, dtype=torch.float64)
    half = torch.as_tensor(scale, dtype=torch.float64) * (window / 2)
    affine = torch.diag_embed(torch.stack([half, half], dim=-1))
    return torch.cat([affine, colmap_to_pixel(xy_t)[:, :, None]], dim=-1)


def crop_patches(image: np.ndarray, lafs: torch.Tensor, patch_size: int) -> np.ndarray:
    """Crop (N, PS, PS) uint8 patches of the frames `lafs` (N, 2, 3) from a grey (H, W) uint8 image.

    Cells outside the image repeat the border pixel.
    """
    if len(lafs) == 0:
        return np.zeros((0, patch_size, patch_size), np.uint8)
    img = torch.from_numpy(image).to(torch.float32)[None, None]
    patches = extract_patches_from_pyramid(img, lafs[None].to(torch.float32), patch_size)
    return patches[0, :, 0].round().clamp(0, 255).to(torch.uint8).numpy()
