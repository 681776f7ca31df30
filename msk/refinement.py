"""Sub-pixel, sub-scale keypoints: each detection moves to the extremum of the scale-normalised
Laplacian of Gaussian (LoG) over position and scale, as SIFT refines its DoG extrema.

The detector's score maps are sampled every 2^(o+1) pixels in octave o, 1.25 keypoint scales
per cell, four times coarser than COLMAP's SIFT (whose first octave is the 2x-upsampled image),
and its learned soft-argmax leaves ~0.3 cells of error. Each refinement step cuts one patch at
full resolution around the keypoint, on a grid of `step` keypoint scales, and reads from it,
with one matrix product, the LoG at three scales (the keypoint's and `scale_step` octaves
either side) over a grid of (2 radius + 3)^2 positions, 5x5 by default. The best of the 3x3
positions around the keypoint (at the scale where the parabola over the three scales peaks) is the
centre of a Newton step: the quadratic through the 3x3x3 responses around it gives the offset in
x, y and scale at once, as SIFT solves for its DoG extrema. Where those responses have no maximum
within a step (an edge, a saddle), a parabola per axis gives the position and the parabola over
scale the scale. Two steps, since the position found depends on the scale and the scale on the
position. The detector is trained on SIFT's tracked keypoints, so its maxima sit near such blob
centres; every step is bounded, so a keypoint never jumps far.

Measured against refining the position once at the detected scale (BENCHMARKS.md): under random
homographies of training images, repeated keypoints lie 0.17 px apart (median) instead of 0.30
(COLMAP's SIFT: 0.13; 0.19 with parabolas per axis alone); on four training scenes, tracks are 2-5%
longer. Describing the keypoints at the refined scale is what lengthens the tracks.
"""

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from .data.patches import ImagePyramid, crop_patches, upright_lafs

# Differences between responses smaller than this fraction of a keypoint's largest |LoG| are rounding,
# not structure: along a straight edge, float32 convolutions give rows that differ by ~1e-7 of it on
# some CPUs, and a curvature or a best position read from such noise would move the keypoint along
# the edge. Such differences count as ties and flat runs.
NOISE_FLOOR = 1e-5
# Two detections of one blob (neighbouring cells or levels) can both converge onto its LoG extremum:
# twins with one descriptor, which then give a 3D point two observations in one image. On a monstree
# and a drone_palm_desert image, 54 and 78 of 13,056 detections lie within these bounds of a stronger
# one before refinement, 569 and 647 after. The detector's levels are a third of an octave apart: of
# the observations that still repeated an image of their 3D point with the first bounds (half a scale,
# a quarter octave), 57-63% lay within these (BENCHMARKS.md, session 17).
DUPLICATE_DISTANCE = 1.0  # keypoint scales (the smaller of the two)
DUPLICATE_OCTAVES = 0.5
DUPLICATE_ROWS = 512  # keypoints whose neighbours are compared at a time, those with the narrowest windows first


@dataclass(frozen=True)
class RefinementConf:
    # Figures: median distance of repeated keypoints under random homographies of training images
    # (scripts/keypoint_localization.py), with three steps of parabolas per axis (before the Newton step).
    # Search-grid spacing and patch pixel, in keypoint scales: 1/2 left them 0.18 px apart, not 0.15.
    step: float = 1 / 3
    # Per step, the extremum is searched within +-radius positions, then refined (Newton step or parabolas).
    radius: int = 1
    # Each LoG kernel reaches +-3 of its scales: +-2.5 (26% fewer pixels to cut) left them 0.18 px apart.
    kernel_extent: float = 3.0
    scale_step: float = 1 / 3  # octaves between the three scales compared
    # Steps of position and scale refinement. With 2 / 3 / 4 (parabolas per axis alone, before the Newton
    # step), repeated keypoints lay 0.19 / 0.15 / 0.14 px apart; on four training scenes 3 built up to 2%
    # longer tracks than 2 but fewer points on three of them, for 0.19 s more per 12,288 keypoints (one thread).
    # With the Newton step, 3 left them 0.14 px apart (0.17 with 2), with 1-3% longer tracks but 0.7-3.7% fewer points.
    iterations: int = 2


def parabola_vertex(
    minus: torch.Tensor, centre: torch.Tensor, plus: torch.Tensor, tolerance: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """Offsets (N,) within [-0.5, 0.5] steps of the vertex of the parabola through three equally spaced samples.

    0 where the samples (N,) each have no maximum (curvature >= -tolerance: an edge, a saddle or a flat run).
    """
    curvature = minus - 2 * centre + plus
    offset = 0.5 * (minus - plus) / curvature.clamp(max=-1e-6)
    return torch.where(curvature < -tolerance, offset.clamp(-0.5, 0.5), torch.zeros_like(offset))


def parabola_at(minus: torch.Tensor, centre: torch.Tensor, plus: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The parabolas through samples at -1, 0 and +1 (any broadcastable shapes), evaluated at t."""
    return centre + t * (plus - minus) / 2 + t**2 * (plus - 2 * centre + minus) / 2


@functools.cache
def log_kernels(conf: RefinementConf) -> tuple[torch.Tensor, int]:
    """Scale-normalised LoG kernels, the columns of a matrix (P * P, 3 * W * W), and the patch side P.

    Column (k, i, j), for k = 0, 1, 2 and i, j = 0 .. W - 1 (W = 2 radius + 3), is the kernel of
    scale 2^((k - 1) scale_step) keypoint scales centred (j - W // 2, i - W // 2) steps from the
    centre of a P x P patch sampled every `step` keypoint scales: the patch's dot product with it
    is the response there. Each kernel is zero-mean over its support (a flat patch responds 0) and
    divided by its squared scale, so that responses compare across scales. Its sign is SIFT's
    DoG's: negative at the centre, so bright blobs give minima.
    """
    window = 2 * conf.radius + 3
    half = math.ceil(conf.kernel_extent * 2**conf.scale_step / conf.step - 1e-6)  # the largest kernel's
    side = 2 * half + window
    grid = (torch.arange(side, dtype=torch.float64) - (side - 1) / 2) * conf.step
    offsets = (torch.arange(window, dtype=torch.float64) - window // 2) * conf.step
    scale = 2.0 ** ((torch.arange(3, dtype=torch.float64) - 1) * conf.scale_step)
    u = (grid - offsets[None, None, :, None, None]) / scale[:, None, None, None, None]  # (3, 1, W, 1, P)
    v = (grid[:, None] - offsets[None, :, None, None, None]) / scale[:, None, None, None, None]  # (3, W, 1, P, 1)
    support = ((u.abs() <= conf.kernel_extent + 1e-9) & (v.abs() <= conf.kernel_extent + 1e-9)).double()
    squared_radius = (u**2 + v**2) / 2
    kernels = (squared_radius - 1) * torch.exp(-squared_radius) * support  # (3, W, W, P, P)
    mean = kernels.sum(dim=(-2, -1), keepdim=True) / support.sum(dim=(-2, -1), keepdim=True)
    kernels = (kernels - mean) * support / scale[:, None, None, None, None] ** 2
    return kernels.reshape(3 * window * window, side * side).T.float().contiguous(), side


def log_responses(
    image: np.ndarray | ImagePyramid,
    position: torch.Tensor,
    scale: torch.Tensor,
    conf: RefinementConf = RefinementConf(),
) -> torch.Tensor:
    """Responses (N, 3, W, W) of the `log_kernels` around keypoints at COLMAP positions (N, 2) with scales (N,),
    in a grey (H, W) image (or its pyramid): indexed (scale, y, x), W = 2 radius + 3 positions `step`
    keypoint scales apart, centred on the keypoint.
    """
    kernels, side = log_kernels(conf)
    window = 2 * conf.radius + 3
    lafs = upright_lafs(position.numpy(), scale.numpy(), side * conf.step)
    patches = torch.from_numpy(crop_patches(image, lafs, side)).flatten(1).float()
    # Zero-mean kernels sum to float32 rounding, not 0: centring the patches makes a flat one respond 0.
    patches -= patches.mean(dim=1, keepdim=True)
    return (patches @ kernels).view(-1, 3, window, window)


def _lines_through_centre(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The samples (N, 3) through the centre of samples (N, 3, 3, 3) indexed (scale, y, x), along x, y and scale."""
    return samples[:, 1, 1], samples[:, 1, :, 1], samples[:, :, 1, 1]


def negative_hessian(samples: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Entries xx, yy, ss, xy, xs, ys (each (N,)) of minus the Hessian over x, y and scale at the centre of
    samples (N, 3, 3, 3) indexed (scale, y, x), by central differences in steps."""
    centre = samples[:, 1, 1, 1]

    def mixed(plane: torch.Tensor) -> torch.Tensor:  # (N, 3, 3) -> (N,): the second derivative across its two axes
        return (plane[:, 2, 2] - plane[:, 2, 0] - plane[:, 0, 2] + plane[:, 0, 0]) / 4

    xx, yy, ss = (2 * centre - line[:, 0] - line[:, 2] for line in _lines_through_centre(samples))
    xy, xs, ys = (-mixed(plane) for plane in (samples[:, 1], samples[:, :, 1], samples[:, :, :, 1]))
    return xx, yy, ss, xy, xs, ys


def quadratic_maximum(samples: torch.Tensor, tolerance: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Offsets (N, 3) in steps (x, y, scale) of the maximum of the quadratic through samples (N, 3, 3, 3)
    indexed (scale, y, x) around their centre; NaN where the samples have no maximum (minus the Hessian
    is not positive definite with every pivot above `tolerance`, (N,) or a number).

    Gradient and Hessian by central differences and one Newton step, solved in closed form.
    """
    gx, gy, gs = ((line[:, 2] - line[:, 0]) / 2 for line in _lines_through_centre(samples))
    # The maximum solves A offset = gradient for A = -Hessian, which must be positive definite: its
    # pivots a, (a d - b^2) / a and det A / (a d - b^2) positive (above the tolerance: a pivot within
    # rounding of 0 is an axis without a maximum). A's inverse is its adjugate over its determinant.
    a, d, f, b, c, e = negative_hessian(samples)
    adj_xx, adj_xy, adj_xs = d * f - e * e, c * e - b * f, b * e - c * d
    adj_yy, adj_ys, adj_ss = a * f - c * c, b * c - a * e, a * d - b * b
    determinant = a * adj_xx + b * adj_xy + c * adj_xs
    offset = (
        torch.stack(
            [
                adj_xx * gx + adj_xy * gy + adj_xs * gs,
                adj_xy * gx + adj_yy * gy + adj_ys * gs,
                adj_xs * gx + adj_ys * gy + adj_ss * gs,
            ],
            dim=1,
        )
        / determinant[:, None]
    )
    maximum = (a > tolerance) & (adj_ss > tolerance * a) & (determinant > tolerance * adj_ss)
    return torch.where(maximum[:, None], offset, torch.full_like(offset, torch.nan))


@torch.inference_mode()
def refine_blobs(
    image: np.ndarray | ImagePyramid, xy: np.ndarray, sigma: np.ndarray, conf: RefinementConf = RefinementConf()
) -> tuple[np.ndarray, np.ndarray]:
    """Refined COLMAP positions (N, 2) and scales (N,) of keypoints at COLMAP xy (N, 2) with scales sigma (N,),
    in a grey (H, W) image (or its pyramid).

    Per step a keypoint moves at most (radius + 1/2) steps per axis and its scale by scale_step / 2
    octaves; it stays inside the image. It keeps its position and scale where the LoG is zero at
    the keypoint (a flat patch); where the responses have no maximum over x, y and scale within a
    step, it keeps its scale where they have none over scale and its position along an axis with
    none (an edge or a saddle). Ties go to the position nearest the keypoint. Computed in float32,
    returned in the inputs' dtypes.
    """
    if len(xy) == 0:
        return xy, sigma
    window, mid = 2 * conf.radius + 3, conf.radius + 1
    searched_steps = torch.arange(-conf.radius, conf.radius + 1, dtype=torch.float32)
    distance = searched_steps[:, None] ** 2 + searched_steps[None, :] ** 2
    nearest_first = 1 + distance.max() - distance
    index = torch.arange(len(xy))
    height, width = image.shape
    corner = torch.tensor([width, height], dtype=torch.float32)
    position, scale = torch.from_numpy(xy).float(), torch.from_numpy(sigma).float()
    for _ in range(conf.iterations):
        response = log_responses(image, position, scale, conf)
        # The extremum of the keypoint's own kind: a maximum of |LoG| with the sign found at the keypoint.
        response = response * torch.sign(response[:, 1, mid, mid])[:, None, None, None]
        noise = NOISE_FLOOR * response.abs().amax(dim=(1, 2, 3))  # (N,)
        below, at, above = response.unbind(dim=1)
        shift = parabola_vertex(below[:, mid, mid], at[:, mid, mid], above[:, mid, mid], noise)  # (N,) scale steps
        at_scale = parabola_at(below, at, above, shift[:, None, None])
        searched = at_scale[:, 1:-1, 1:-1]
        ties = searched >= searched.amax(dim=(1, 2), keepdim=True) - noise[:, None, None]
        best = ties.float() * nearest_first
        cell = best.flatten(1).argmax(dim=1)
        row, col = cell // (window - 2) + 1, cell % (window - 2) + 1
        peak = at_scale[index, row, col]
        dx = parabola_vertex(at_scale[index, row, col - 1], peak, at_scale[index, row, col + 1], noise)
        dy = parabola_vertex(at_scale[index, row - 1, col], peak, at_scale[index, row + 1, col], noise)
        # Where the responses around the best position have a maximum within a step of it, the quadratic
        # through them locates it with the axes' coupling (as SIFT does), each move capped at half a step
        # as the parabolas' are; elsewhere (an edge, a saddle, a maximum further off) the parabolas per
        # axis above do. Medians of repeated keypoints 0.17 px apart against 0.19 with parabolas alone,
        # 0.16 without the fallback but 0.6% fewer repeated within 3 px (scripts/keypoint_localization.py).
        around = torch.arange(-1, 2)
        rows, cols = (row[:, None] + around)[:, None, :, None], (col[:, None] + around)[:, None, None, :]
        around_best = response[index[:, None, None, None], torch.arange(3)[:, None, None], rows, cols]  # (N, 3, 3, 3)
        newton = quadratic_maximum(around_best, noise)
        found = newton.abs().le(1).all(dim=1)
        newton = newton.clamp(-0.5, 0.5)
        dx, dy = torch.where(found, newton[:, 0], dx), torch.where(found, newton[:, 1], dy)
        shift = torch.where(found, newton[:, 2], shift)
        offset = torch.stack([col - mid + dx, row - mid + dy], dim=1) * conf.step
        position = torch.minimum((position + offset * scale[:, None]).clamp(min=0), corner)
        scale = scale * 2 ** (shift * conf.scale_step)
    return position.numpy().astype(xy.dtype), scale.numpy().astype(sigma.dtype)


def converged_duplicates(
    xy: np.ndarray, sigma: np.ndarray, distance: float = DUPLICATE_DISTANCE, octaves: float = DUPLICATE_OCTAVES
) -> np.ndarray:
    """(N,) True for each keypoint within `distance` scales (the smaller one's) and `octaves` of a keypoint
    before it, for keypoints at positions (N, 2) with scales (N,), strongest first: the twins to drop.

    Candidates come from a sweep along x (a twin is within `distance` of a keypoint's own scale in x),
    so the work grows with the keypoints times their neighbours, not with the square of the keypoints.
    """
    x, y = torch.from_numpy(xy[:, 0]).double(), torch.from_numpy(xy[:, 1]).double()
    scale = torch.from_numpy(sigma).double()
    log_scale = scale.log2()
    by_x = torch.argsort(x)
    sorted_x = x[by_x]
    reach = distance * scale[by_x]
    first = torch.searchsorted(sorted_x, sorted_x - reach)  # (N,) window [first, stop) of each keypoint in by_x
    stop = torch.searchsorted(sorted_x, sorted_x + reach, right=True)
    # Rows with windows of similar widths go together: a block is as wide as its widest window, and on a
    # monstree image the widest window holds 818 keypoints, the median one 52.
    by_width = torch.argsort(stop - first)
    duplicate = torch.zeros(len(xy), dtype=torch.bool)
    for start in range(0, len(xy), DUPLICATE_ROWS):
        rows = by_width[start : start + DUPLICATE_ROWS]
        window = first[rows, None] + torch.arange(int((stop[rows] - first[rows]).max()))  # (R, W)
        inside = window < stop[rows, None]
        other, me = by_x[window.clamp(max=len(xy) - 1)], by_x[rows, None]
        twin = inside & (other < me)  # a stronger keypoint
        twin &= torch.hypot(x[other] - x[me], y[other] - y[me]) < distance * torch.minimum(scale[other], scale[me])
        twin &= (log_scale[other] - log_scale[me]).abs() < octaves
        duplicate[by_x[rows]] = twin.any(dim=1)
    return duplicate.numpy()
