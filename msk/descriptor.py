"""The MSK triplet network: keypoint patch -> L2-normalised embedding.

Built for CPU speed: the first convolution already strides by 2, so no layer runs at the full
32x32 patch resolution (4,000 patches take well under a second on 2 cores in channels-last).
Batch norm helps training; `fuse_for_inference` folds it into the convolutions for use.
"""

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from .data.patches import ImagePyramid, PatchConf, crop_patches, oriented_lafs


def check_patch_size(patch_size: int) -> int:
    """`patch_size` if the network reads patches of that side into one embedding; ValueError otherwise.

    Two stride-2 convolutions leave ceil(ceil(P / 2) / 2) cells a side, which the last convolution,
    P // 4 wide, reduces to one only where P is a multiple of 4: a 30-pixel patch would leave 2x2
    cells and a 512-D "descriptor" that nothing downstream expects.
    """
    if patch_size < 4 or patch_size % 4:
        raise ValueError(
            f"the patch size must be a multiple of 4 (the descriptor network strides twice by 2), not {patch_size}"
        )
    return patch_size


@dataclass(frozen=True)
class DescriptorConf:
    patch_size: int = 32
    channels: tuple[int, int] = (32, 64)
    dim: int = 128
    dropout: float = 0.1

    def __post_init__(self):
        check_patch_size(self.patch_size)


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


def normalize_patches(patches: torch.Tensor) -> torch.Tensor:
    """Per-patch zero mean, unit variance: invariance to affine lighting changes. (B, 1, P, P)."""
    mean = patches.mean(dim=(2, 3), keepdim=True)
    std = patches.std(dim=(2, 3), keepdim=True)
    return (patches - mean) / (std + 1e-3)


class TripletDescriptor(nn.Module):
    """(B, 1, P, P) float patches (any intensity range) -> (B, D) unit-length descriptors."""

    def __init__(self, conf: DescriptorConf = DescriptorConf()):
        super().__init__()
        self.conf = conf
        c1, c2 = conf.channels
        self.features = nn.Sequential(
            *_conv_bn_relu(1, c1, 5, 2),
            *_conv_bn_relu(c1, c1, 3, 1),
            *_conv_bn_relu(c1, c2, 3, 2),
            *_conv_bn_relu(c2, c2, 3, 1),
            nn.Dropout(conf.dropout),
            nn.Conv2d(c2, conf.dim, conf.patch_size // 4),  # (B, D, 1, 1)
        )

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        embedding = self.features(normalize_patches(patches)).flatten(1)
        return nn.functional.normalize(embedding, dim=1)

    def config(self) -> dict:
        return asdict(self.conf)


def fuse_for_inference(model: TripletDescriptor) -> TripletDescriptor:
    """Fold batch norms into the preceding convolutions (eval mode, same outputs, faster)."""
    model = model.eval()
    layers = list(model.features)
    fused = []
    index = 0
    while index < len(layers):
        layer = layers[index]
        if isinstance(layer, nn.Conv2d) and index + 1 < len(layers) and isinstance(layers[index + 1], nn.BatchNorm2d):
            fused.append(torch.nn.utils.fusion.fuse_conv_bn_eval(layer, layers[index + 1]))
            index += 2
        else:
            fused.append(layer)
            index += 1
    model.features = nn.Sequential(*fused)
    return model.to(memory_format=torch.channels_last)


def native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 dot products natively (AVX512-BF16), where they pay off.

    Not where torch is held to narrower kernels (ATEN_CPU_CAPABILITY=avx2): with MKL_ENABLE_INSTRUCTIONS=AVX2
    too, that runs everything as on a CPU without AVX-512 (many laptops), to time it.
    """
    return torch.cpu._is_avx512_bf16_supported() and torch.backends.cpu.get_cpu_capability().startswith("AVX512")


@torch.inference_mode()
def describe_keypoints(
    model: TripletDescriptor,
    image: np.ndarray | ImagePyramid,
    keypoints: np.ndarray,
    patch_conf: PatchConf = PatchConf(),
    bfloat16: bool = False,
) -> torch.Tensor:
    """Descriptors (N, D) float32 of COLMAP keypoints (N, 6) in a grey (H, W) uint8 image (or its pyramid).

    Patches are cut exactly as the training set cut them (msk.data.patches). `bfloat16` runs the
    network in bfloat16 (only worth it where `native_bfloat16()`): 1.6x faster on 2 cores, and
    the descriptors stay within cosine 0.9999 of float32 ones (scripts/bfloat16_agreement.py).
    """
    return describe_patches(model, descriptor_patches(image, keypoints, patch_conf), bfloat16)


def descriptor_patches(
    image: np.ndarray | ImagePyramid, keypoints: np.ndarray, patch_conf: PatchConf = PatchConf()
) -> np.ndarray:
    """The (N, P, P) uint8 patches the descriptor sees for COLMAP keypoints (N, 6), cut as the training set's."""
    return crop_patches(image, oriented_lafs(keypoints, patch_conf.window), patch_conf.patch_size)


# Patches run through the network at a time: batches whose activations stay in cache make the network
# 1.3x faster on one thread (as an extraction worker runs it) than one batch of 8,192 patches.
DESCRIBE_BATCH = 1024


@torch.inference_mode()
def describe_patches(model: TripletDescriptor, patches: np.ndarray, bfloat16: bool = False) -> torch.Tensor:
    """Descriptors (N, D) float32 of (N, P, P) uint8 patches cut as `crop_patches` cuts them; see describe_keypoints."""
    if len(patches) == 0:
        return torch.zeros(0, model.conf.dim)
    return torch.cat(
        [
            _describe_batch(model, patches[i : i + DESCRIBE_BATCH], bfloat16)
            for i in range(0, len(patches), DESCRIBE_BATCH)
        ]
    )


def _describe_batch(model: TripletDescriptor, patches: np.ndarray, bfloat16: bool) -> torch.Tensor:
    batch = torch.from_numpy(patches).float().div(255)[:, None].contiguous(memory_format=torch.channels_last)
    if not bfloat16:
        return model(batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        embedding = model(batch)
    return nn.functional.normalize(embedding.float(), dim=1)
