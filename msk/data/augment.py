"""On-the-fly augmentation of patches: photometric changes and a small random similarity.

SfM tracks already bring real changes of viewpoint, scale and lighting; augmentation adds what
the tracks of a few scenes lack: other exposures and contrasts, sensor noise, and the small
errors in keypoint position, scale and orientation that a detector makes.
"""

from dataclasses import dataclass

import torch
from kornia.geometry.transform import get_rotation_matrix2d, warp_affine


@dataclass(frozen=True)
class AugmentConf:
    brightness: float = 0.1  # additive shift, up to this fraction of the range
    contrast: float = 0.3  # multiplicative, in [1 - contrast, 1 + contrast]
    gamma: float = 0.3  # exponent in [exp(-gamma), exp(gamma)]
    noise: float = 0.02  # Gaussian noise std, up to this
    rotation_deg: float = 10.0  # up to +- this
    log2_scale: float = 0.15  # scale factor in [2^-s, 2^s]
    shift_px: float = 1.0  # up to +- this, in patch pixels


def _uniform(n: int, half_width: float, generator: torch.Generator | None) -> torch.Tensor:
    return (torch.rand(n, generator=generator) * 2 - 1) * half_width


def photometric(x: torch.Tensor, conf: AugmentConf, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random brightness, contrast, gamma and noise on patches (B, 1, H, W) in [0, 1]."""
    b = len(x)
    gamma = torch.exp(_uniform(b, conf.gamma, generator)).view(b, 1, 1, 1)
    x = x.clamp(0, 1) ** gamma
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    contrast = (1 + _uniform(b, conf.contrast, generator)).view(b, 1, 1, 1)
    x = (x - mean) * contrast + mean + _uniform(b, conf.brightness, generator).view(b, 1, 1, 1)
    noise_std = torch.rand(b, 1, 1, 1, generator=generator) * conf.noise
    x = x + torch.randn(x.shape, generator=generator) * noise_std
    return x.clamp(0, 1)


def geometric(
    x: torch.Tensor, conf: AugmentConf, generator: torch.Generator | None = None, shift: bool = True
) -> torch.Tensor:
    """A small random rotation, scaling and (if `shift`) translation of patches (B, 1, H, W).

    About the patch centre; the border is reflected, so no black corners appear.
    """
    b, _, h, w = x.shape
    centre = torch.tensor([(w - 1) / 2, (h - 1) / 2]).expand(b, 2)
    angle = _uniform(b, conf.rotation_deg, generator)
    scale = torch.pow(2.0, _uniform(b, conf.log2_scale, generator))[:, None].expand(b, 2)
    matrix = get_rotation_matrix2d(centre, angle, scale)
    if shift:
        matrix[:, :, 2] += torch.stack([_uniform(b, conf.shift_px, generator) for _ in range(2)], dim=-1)
    return warp_affine(x, matrix, (h, w), padding_mode="reflection", align_corners=True)


def augment(
    x: torch.Tensor, conf: AugmentConf, generator: torch.Generator | None = None, shift: bool = True
) -> torch.Tensor:
    """Geometric then photometric augmentation of patches (B, 1, H, W) in [0, 1]."""
    return photometric(geometric(x, conf, generator, shift), conf, generator)
