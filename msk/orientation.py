"""Gradient-based keypoint orientation, SIFT's recipe in batched torch.

The dominant direction of a magnitude-weighted histogram of gradient angles (36 bins,
Gaussian window of 1.5 sigma, smoothed, parabola-refined peak), measured on upright patches cut
with the training set's patch convention, over SIFT's smaller orientation region; and, as SIFT
gives, a second direction where another peak reaches 0.8 of the highest. Angles follow
COLMAP's: the keypoint's x axis points along (cos, sin) in image coordinates (x right, y down).
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from kornia.filters import spatial_gradient

from .data.patches import ImagePyramid, PatchConf, crop_patches, upright_lafs
from .refinement import parabola_vertex

NUM_BINS = 36
# SIFT's orientation region: a Gaussian of 1.5 sigma, read out to 3 of its sigmas (9 sigma across).
# On training images turned by 37 and 110 degrees (scripts/orientation_consistency.py), as many
# orientations follow the turn within 10 degrees as with the descriptor's 12-sigma, 32-pixel patches
# (0.914 against 0.916), at 2.5x less time.
ORIENTATION_PATCH = PatchConf(patch_size=20, window=9.0)


# SIFT's rule, and COLMAP's default of up to two orientations per keypoint: another peak of the
# histogram at least this high gives the keypoint a second orientation.
SECOND_PEAK_RATIO = 0.8


@torch.inference_mode()
def keypoint_orientations(
    image: np.ndarray | ImagePyramid, xy: np.ndarray, sigma: np.ndarray, patch_conf: PatchConf = ORIENTATION_PATCH
) -> tuple[np.ndarray, np.ndarray]:
    """Dominant and second orientations (N,), (N,) radians of keypoints at COLMAP xy (N, 2) with scales (N,).

    The second is the next highest peak of the histogram where it reaches SECOND_PEAK_RATIO of the
    highest, NaN elsewhere (one clear direction, or a flat patch). `image`: grey, or its pyramid.
    """
    if len(xy) == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    patches = torch.from_numpy(
        crop_patches(image, upright_lafs(xy, sigma, patch_conf.window), patch_conf.patch_size)
    ).float()
    gradient = spatial_gradient(patches[:, None], mode="sobel")[:, 0]  # (N, 2, P, P): d/dx, d/dy
    gx, gy = gradient[:, 0], gradient[:, 1]
    size = patch_conf.patch_size
    window_px = 1.5 * size / patch_conf.window  # SIFT's 1.5 sigma in patch pixels
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    window = torch.exp(-(coords[:, None] ** 2 + coords[None, :] ** 2) / (2 * window_px**2))
    weight = (torch.hypot(gx, gy) * window).flatten(1)
    bins = ((torch.atan2(gy, gx) + math.pi) / (2 * math.pi) * NUM_BINS).long().clamp(0, NUM_BINS - 1).flatten(1)
    histogram = torch.zeros(len(xy), NUM_BINS).scatter_add_(1, bins, weight)
    kernel = torch.tensor([[[1.0, 1.0, 1.0]]]) / 3
    for _ in range(2):
        histogram = F.conv1d(F.pad(histogram[:, None], (1, 1), mode="circular"), kernel)[:, 0]
    peak = histogram.argmax(dim=1)
    highest = histogram.gather(1, peak[:, None])[:, 0]
    is_peak = (histogram > histogram.roll(1, dims=1)) & (histogram > histogram.roll(-1, dims=1))
    others = torch.where(is_peak, histogram, torch.zeros_like(histogram)).scatter(1, peak[:, None], 0.0)
    second_height, second_peak = others.max(dim=1)
    has_second = (second_height > 0) & (second_height >= SECOND_PEAK_RATIO * highest)
    second = torch.where(has_second, _peak_angle(histogram, second_peak), torch.full_like(highest, torch.nan))
    return _peak_angle(histogram, peak).numpy().astype(np.float32), second.numpy().astype(np.float32)


def dominant_orientation(
    image: np.ndarray | ImagePyramid, xy: np.ndarray, sigma: np.ndarray, patch_conf: PatchConf = ORIENTATION_PATCH
) -> np.ndarray:
    """Orientations (N,) radians of keypoints at COLMAP xy (N, 2) with scales (N,) in a grey image (or its pyramid)."""
    return keypoint_orientations(image, xy, sigma, patch_conf)[0]


def _peak_angle(histogram: torch.Tensor, peak: torch.Tensor) -> torch.Tensor:
    """Angles (N,) radians of bins `peak` (N,) of histograms (N, NUM_BINS), refined by a parabola through
    their neighbours."""
    left = histogram.gather(1, ((peak - 1) % NUM_BINS)[:, None])[:, 0]
    centre = histogram.gather(1, peak[:, None])[:, 0]
    right = histogram.gather(1, ((peak + 1) % NUM_BINS)[:, None])[:, 0]
    return (peak.float() + 0.5 + parabola_vertex(left, centre, right)) / NUM_BINS * 2 * math.pi - math.pi
