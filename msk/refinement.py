"""Sub-pixel keypoint positions at full resolution: the blob centre at the keypoint's own scale.

The detector's score maps are sampled every 2^(o+1) pixels in octave o, 1.25 keypoint scales
per cell, four times coarser than COLMAP's SIFT (whose first octave is the 2x-upsampled image),
and its learned soft-argmax leaves ~0.3 cells of error. Here each keypoint moves to the
extremum of the scale-normalised Laplacian of Gaussian (LoG) at its scale, searched on a grid
of `step` scales around it in a patch cut at full resolution, then refined by a parabola per
axis, as SIFT refines its DoG extrema. The detector is trained on SIFT's tracked keypoints, so
its maxima sit near such blob centres; the search is bounded (`radius` steps) so a keypoint
never jumps to another structure.

Measured on the homography pairs (`msk bench homography`, 2,048 keypoints) and the Strecha
scenes (`msk compare`): see BENCHMARKS.md. A kernel of 0.7 or 1.4 times the keypoint scale
did worse than 1.0; refining the scale the same way (LoG over sigma * 2^(+-1/3)) gave 4% more
correct matches but a lower MMA@3 and no better poses, for one more patch crop, so it is left out.
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from colmap_plugin.keypoints import affine_keypoints

from .data.patches import ImagePyramid, crop_patches, oriented_lafs


@dataclass(frozen=True)
class RefinementConf:
    # Search-grid spacing and patch pixel, in keypoint scales: as accurate as 1/4 on the homography
    # pairs, with 35% fewer pixels to cut.
    step: float = 1 / 3
    radius: int = 1  # the extremum is searched within +-radius steps, then refined by up to half a step
    kernel_extent: float = 3.0  # the LoG kernel reaches +-3 keypoint scales


def parabola_vertex(minus: torch.Tensor, centre: torch.Tensor, plus: torch.Tensor) -> torch.Tensor:
    """Offsets (N,) within [-0.5, 0.5] steps of the vertex of the parabola through three equally spaced samples.

    0 where the samples (N,) each have no maximum (curvature >= 0: an edge, a saddle or a flat run).
    """
    curvature = minus - 2 * centre + plus
    offset = 0.5 * (minus - plus) / curvature.clamp(max=-1e-6)
    return torch.where(curvature < 0, offset.clamp(-0.5, 0.5), torch.zeros_like(offset))


def log_kernel(conf: RefinementConf) -> torch.Tensor:
    """Zero-mean Laplacian-of-Gaussian kernel (1, 1, K, K) of scale 1 sampled every `conf.step`.

    Its sign is SIFT's DoG's: negative at the centre, so bright blobs give minima.
    """
    half = round(conf.kernel_extent / conf.step)
    steps = torch.arange(-half, half + 1, dtype=torch.float32) * conf.step
    x, y = torch.meshgrid(steps, steps, indexing="xy")
    squared_radius = (x**2 + y**2) / 2
    kernel = (squared_radius - 1) * torch.exp(-squared_radius)
    return (kernel - kernel.mean())[None, None]


@torch.inference_mode()
def refine_to_blob_centres(
    image: np.ndarray | ImagePyramid, xy: np.ndarray, sigma: np.ndarray, conf: RefinementConf = RefinementConf()
) -> np.ndarray:
    """Refined COLMAP positions (N, 2) of keypoints at COLMAP xy (N, 2) with scales sigma (N,), grey (H, W) image
    (or its pyramid).

    A keypoint moves at most (radius + 1/2) steps per axis and stays inside the image. It keeps its
    position where the LoG is zero at the detection (a flat patch), and along an axis on which the
    response has no maximum (an edge or a saddle); ties go to the cell nearest the detection.
    """
    if len(xy) == 0:
        return xy
    kernel = log_kernel(conf)
    reach = conf.radius + 1  # one more cell on each side for the parabola
    size = kernel.shape[-1] + 2 * reach
    upright = affine_keypoints(xy, sigma, np.zeros(len(xy), np.float32))
    patches = torch.from_numpy(crop_patches(image, oriented_lafs(upright, size * conf.step), size)).float()
    response = F.conv2d(patches[:, None], kernel)[:, 0]  # (N, 2 reach + 1, 2 reach + 1), centre = the detection
    # The extremum of the detection's own kind: a maximum of |LoG| with the sign found at the centre.
    response = response * torch.sign(response[:, reach, reach])[:, None, None]
    steps = torch.arange(-conf.radius, conf.radius + 1, dtype=torch.float32)
    distance = steps[:, None] ** 2 + steps[None, :] ** 2
    searched = response[:, 1:-1, 1:-1]
    # Among equal responses, the cell nearest the detection wins.
    best = (searched == searched.amax(dim=(1, 2), keepdim=True)).float() * (1 + distance.max() - distance)
    cell = best.flatten(1).argmax(dim=1)
    width = 2 * conf.radius + 1
    row, col = cell // width + 1, cell % width + 1
    index = torch.arange(len(xy))
    peak = response[index, row, col]
    dx = parabola_vertex(response[index, row, col - 1], peak, response[index, row, col + 1])
    dy = parabola_vertex(response[index, row - 1, col], peak, response[index, row + 1, col])
    offset = torch.stack([col - reach + dx, row - reach + dy], dim=1) * conf.step
    refined = xy + offset.numpy() * sigma[:, None]
    height, width_px = image.shape
    return np.clip(refined, 0, [width_px, height]).astype(xy.dtype)
