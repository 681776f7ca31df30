"""Oriented, scale-normalised patches around COLMAP keypoints, cropped in one batch per image.

A COLMAP keypoint is (x, y, a11, a12, a21, a22): its centre in corner-origin pixels and the
affine frame A = [[a11, a12], [a21, a22]] whose columns are the keypoint's x and y axes in the
image, each as long as the keypoint's scale (sigma, in full-resolution pixels).

A patch is kornia's local affine frame (LAF) crop of the frame scaled by `window / 2`: it tiles
the square of side `window * sigma` around the keypoint (SIFT's descriptor window is 4 bins of
3 sigma = 12 sigma), rotated so that the patch's x axis is the keypoint's orientation. The
keypoint lies exactly at the patch centre, ((PS - 1) / 2, (PS - 1) / 2) in array indices.
Patches are sampled from the pyramid level that matches the patch scale, so large keypoints are
anti-aliased rather than point-sampled: kornia's `extract_patches_from_pyramid` convention (its
levels, level choice, positions and border handling), which cut the training set. `ImagePyramid`
builds the levels once per image, so the extractor's three crops (refinement, orientation,
descriptor) share them, and the sampling grids are formed per axis and broadcast: 3x faster than
kornia's atlas on 8,192 keypoints of a 1536x1024 image (tests/test_data_patches.py checks the
two agree).
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from kornia.geometry.transform import pyrdown

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


class ImagePyramid:
    """A grey (H, W) uint8 image and its pyrdown levels, built as far as patch crops need them."""

    def __init__(self, image: np.ndarray):
        self.shape = image.shape
        self.levels = [torch.from_numpy(image).to(torch.float32)[None, None]]

    def for_patch_size(self, patch_size: int) -> list[torch.Tensor]:
        """The levels (1, 1, H_l, W_l) a patch of `patch_size` may come from: kornia's, whose shorter side is >= it."""
        count = 1
        while count < min(self.shape) // patch_size:
            if count == len(self.levels):
                if min(self.levels[-1].shape[-2:]) <= 2:
                    break
                self.levels.append(pyrdown(self.levels[-1]))
            if min(self.levels[count].shape[-2:]) < patch_size:
                break
            count += 1
        return self.levels[:count]


def crop_patches(image: np.ndarray | ImagePyramid, lafs: torch.Tensor, patch_size: int) -> np.ndarray:
    """Crop (N, PS, PS) uint8 patches of the frames `lafs` (N, 2, 3) from a grey (H, W) uint8 image.

    Cell (i, j) samples the image at c + A (u_j, u_i), u_k = (2 k + 1) / PS - 1, for the LAF [A | c]
    in centre-origin pixels, from pyramid level floor(log2(2 sqrt|det A| / PS)) (clamped to the
    levels there are); cells outside the image repeat the border pixel.
    """
    if len(lafs) == 0:
        return np.zeros((0, patch_size, patch_size), np.uint8)
    pyramid = image if isinstance(image, ImagePyramid) else ImagePyramid(image)
    levels = pyramid.for_patch_size(patch_size)
    lafs = lafs.to(torch.float32)
    affine, centre = lafs[:, :, :2], lafs[:, :, 2]
    scale = (affine[:, 0, 0] * affine[:, 1, 1] - affine[:, 1, 0] * affine[:, 0, 1]).abs().add(1e-10).sqrt()
    level = (2 * scale / patch_size).log2().clamp(0, len(levels) - 1).long()
    # grid_sample's frame: pixel x of a side of w pixels sits at (2 x + 1) / w - 1 on every level.
    height, width = pyramid.shape
    to_grid = torch.tensor([2 / width, 2 / height])
    offset = (2 * centre + 1) * to_grid / 2 - 1  # (N, 2)
    steps = (2 * torch.arange(patch_size, dtype=torch.float32) + 1) / patch_size - 1
    along_x = affine[:, :, 0, None] * steps * to_grid[:, None]  # (N, 2, PS): the grid's move per column
    along_y = affine[:, :, 1, None] * steps * to_grid[:, None]  # (N, 2, PS): per row
    patches = torch.zeros(len(lafs), patch_size, patch_size)  # a frame with no level (NaN) stays zero, as in kornia
    for index, source in enumerate(levels):
        chosen = torch.nonzero(level == index)[:, 0]
        if len(chosen) == 0:
            continue
        grid = torch.empty(len(chosen), patch_size, patch_size, 2)
        for axis in range(2):
            start = along_x[chosen, axis] + offset[chosen, axis, None]  # (n, PS)
            torch.add(start[:, None, :], along_y[chosen, axis, :, None], out=grid[..., axis])
        sampled = F.grid_sample(source, grid.view(1, -1, patch_size, 2), padding_mode="border", align_corners=False)
        patches[chosen] = sampled.view(-1, patch_size, patch_size)
    return patches.round_().clamp_(0, 255).to(torch.uint8).numpy()
