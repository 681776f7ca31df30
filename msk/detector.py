"""The MSK detector: recursive convolutions that regress a learned keypoint scale-space.

Per octave of an image pyramid, a stem (stride 2) turns the image into features; then one
residual block is applied recursively, `levels_per_octave` times, with the same weights: each
application widens the receptive field, so the score head reading the features after step k
judges a larger patch than after step k - 1. The score maps after each step, over all octaves,
stack into a scale-space whose level (o, k) has the nominal scale sigma0 * 2^(o + k / L) in
pixels of the input image. Keypoints are its local maxima over x, y and scale.

Why these choices (measured on 2 CPU cores, 1536x1024 input): a full-resolution stem costs
~4x more than the stride-2 one, and plain 3x3 convolutions at 16 channels ~2x more than the
depthwise-separable block; the shared block keeps the model tiny (weights shared across
steps and octaves, so every scale is judged by the same criterion).
"""

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from colmap_plugin.images import resized_shape

from .refinement import parabola_vertex

MIN_OCTAVE_SIDE = 8  # pixels: an octave whose input image is smaller on a side has no score map


@dataclass(frozen=True)
class DetectorConf:
    channels: int = 16
    levels_per_octave: int = 3
    num_octaves: int = 4
    sigma0: float = 1.6  # nominal scale (pixels) of level (0, 0); SIFT's base scale
    shared_steps: bool = True  # one block for every recursive step, or one block per step


class RecursiveBlock(nn.Module):
    """Residual depthwise-separable block, applied repeatedly with shared weights."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
            nn.Conv2d(channels, channels, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
            nn.Conv2d(channels, channels, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.relu(features + self.body(features))


class MskDetector(nn.Module):
    """Grey images (B, 1, H, W) in [0, 1] -> per octave o, score logits (B, L, H / 2^(o+1), W / 2^(o+1))."""

    def __init__(self, conf: DetectorConf = DetectorConf()):
        super().__init__()
        self.conf = conf
        c = conf.channels
        self.stem = nn.Sequential(
            nn.Conv2d(1, c, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.ModuleList(
            [RecursiveBlock(c) for _ in range(1 if conf.shared_steps else conf.levels_per_octave)]
        )
        self.score = nn.Conv2d(c, 1, 1)
        # Softmax sharpness of the sub-cell soft-argmax (see `soft_argmax_offset`), learned with the maps.
        self.sharpness = nn.Parameter(torch.tensor(1.0))

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        image = (image - 0.5) / 0.25
        octaves = []
        for octave in range(self.conf.num_octaves):
            if octave:
                image = F.avg_pool2d(image, 2)
            if min(image.shape[-2:]) < MIN_OCTAVE_SIDE:
                break
            features = self.stem(image)
            levels = []
            for step in range(self.conf.levels_per_octave):
                features = self.blocks[0 if self.conf.shared_steps else step](features)
                levels.append(self.score(features))
            octaves.append(torch.cat(levels, dim=1))
        return octaves

    def level_sigma(self, octave: int, level: int) -> float:
        """Nominal scale in input pixels of level `level` of octave `octave`."""
        return self.conf.sigma0 * 2 ** (octave + level / self.conf.levels_per_octave)

    def scale_index(self, sigma: torch.Tensor) -> torch.Tensor:
        """Continuous index q = o * L + k of scales `sigma` (input pixels) in the scale-space."""
        return self.conf.levels_per_octave * torch.log2(sigma / self.conf.sigma0)

    @property
    def num_levels(self) -> int:
        return self.conf.levels_per_octave * self.conf.num_octaves

    def config(self) -> dict:
        return asdict(self.conf)


def octave_stride(octave: int) -> int:
    """Input pixels per score-map cell at `octave` (the stem strides by 2)."""
    return 2 ** (octave + 1)


def sample_scores(
    octaves: list[torch.Tensor], xy: torch.Tensor, index: torch.Tensor, batch: torch.Tensor
) -> torch.Tensor:
    """Logits at centre-origin input pixels xy (N, 2) of images `batch` (N,), scale-space levels `index` (N,).

    Bilinear in x and y within the level's map (positions clamped to its border cells); level =
    round(index) clamped to the scale-space. The four cells are gathered, not whole maps, so the
    backward pass adds into few cells, in the fixed order of PyTorch's deterministic algorithms
    (which training turns on) and at little cost.
    """
    num_levels = octaves[0].shape[1]
    level = index.round().long().clamp(0, num_levels * len(octaves) - 1)
    logits = torch.zeros(len(xy), dtype=octaves[0].dtype)
    for octave, maps in enumerate(octaves):
        in_octave = (level // num_levels) == octave
        if not in_octave.any():
            continue
        stride = octave_stride(octave)
        height, width = maps.shape[-2:]
        # Cell (i, j) of a stride-s map covers input pixels [s*j, s*(j+1)): its centre is s*j + (s-1)/2.
        cell = (xy[in_octave] - (stride - 1) / 2) / stride
        x = cell[:, 0].clamp(0, width - 1)
        y = cell[:, 1].clamp(0, height - 1)
        x0, y0 = x.floor().long(), y.floor().long()
        x1, y1 = (x0 + 1).clamp(max=width - 1), (y0 + 1).clamp(max=height - 1)
        wx, wy = x - x0, y - y0
        b, k = batch[in_octave], level[in_octave] % num_levels
        logits[in_octave] = (
            maps[b, k, y0, x0] * (1 - wx) * (1 - wy)
            + maps[b, k, y0, x1] * wx * (1 - wy)
            + maps[b, k, y1, x0] * (1 - wx) * wy
            + maps[b, k, y1, x1] * wx * wy
        )
    return logits


@dataclass(frozen=True)
class DetectionConf:
    max_keypoints: int = 4096
    score_threshold: float = 0.0  # on logits: keep maxima the network finds more likely good than not
    grid_cells: int = 16  # spread over a grid_cells x grid_cells grid before a global fill-up
    # The share of max_keypoints first divided evenly over the cells (each cell's best); the rest go
    # to the strongest. A quarter, against the whole budget, built 10% (drone_palm_desert) and 6%
    # (vggsfm_british_museum) more 3D points on held-out training scenes at the same track length.
    spread_share: float = 0.25
    border: int = 4  # pixels of the image the detector sees
    # Larger images are shrunk to this long side for detection (None: never); keypoints come back in the
    # given image's pixels, to be refined and described there. Of 800, 1,024 and 1,280 px, 1,024 (also the
    # size msk.train.detector holds its images at) built the most 3D points over four training scenes and
    # the most images per point on three. On six training scenes of 1,416-1,600 px, it built 23%, 48% and
    # 2% more points than detecting at full size (monstree, vggsfm_kitchen, sceaux_castle), 4%, 11% and
    # 0.4% fewer (drone_palm_desert, vggsfm_apple, vggsfm_statue), and more images per point on all six;
    # the keypoints are coarser, so less precise. What gains is the coarser sampling: the detector trained
    # on 1,600-px images and run at full size built about what this one built at full size
    # (BENCHMARKS.md, session 20).
    max_image_size: int | None = 1024


def detection_image(image: torch.Tensor, max_size: int | None) -> torch.Tensor:
    """The grey image (1, 1, H, W) shrunk by area averaging so that its long side is at most `max_size`."""
    width, height = resized_shape(image.shape[-1], image.shape[-2], max_size)
    if (height, width) == tuple(image.shape[-2:]):
        return image
    return F.interpolate(image, size=(height, width), mode="area")


def shrink_factors(image: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """(x, y) pixels of `image` (..., H, W) per pixel of `seen`, its detection image (1 where not shrunk)."""
    return torch.tensor([image.shape[-1] / seen.shape[-1], image.shape[-2] / seen.shape[-2]])


def detect(model: MskDetector, image: torch.Tensor, conf: DetectionConf = DetectionConf()) -> dict[str, torch.Tensor]:
    """Keypoints of one grey image (1, 1, H, W) in [0, 1], found in it shrunk to `conf.max_image_size`.

    Returns xy (N, 2) centre-origin pixels of `image` (sub-pixel), sigma (N,) in its pixels (sub-scale)
    and score (N,) probabilities, strongest first.
    """
    seen = detection_image(image, conf.max_image_size)
    return keypoints_from_maps(model, [maps[0] for maps in model(seen)], image, seen, conf)


def keypoints_from_maps(
    model: MskDetector, octaves: list[torch.Tensor], image: torch.Tensor, seen: torch.Tensor, conf: DetectionConf
) -> dict[str, torch.Tensor]:
    """`detect`'s keypoints of `image` from the score-map logits `octaves` (each (L, h, w)) that `model` gives for
    `seen`, the image's detection image (`detection_image`)."""
    height, width = seen.shape[-2:]
    candidates = []
    for octave, maps in enumerate(octaves):
        stack = scale_neighbourhood(octaves, octave)
        stride = octave_stride(octave)
        is_max = (maps == neighbourhood_max(stack)) & (maps > conf.score_threshold)
        level, row, col = torch.nonzero(is_max, as_tuple=True)
        if len(level) == 0:
            continue
        offset = soft_argmax_offset(cell_windows(maps[None], torch.zeros_like(level), level, row, col), model.sharpness)
        level_offset = _refine_level(stack, level + 1, row, col)
        cell_xy = torch.stack([col, row], dim=1).float() + offset
        xy = cell_xy * stride + (stride - 1) / 2
        q = octave * model.conf.levels_per_octave + level.float() + level_offset
        sigma = model.conf.sigma0 * 2 ** (q / model.conf.levels_per_octave)
        candidates.append((xy, sigma, torch.sigmoid(maps[level, row, col])))
    if not candidates:
        empty = torch.zeros(0)
        return {"xy": torch.zeros(0, 2), "sigma": empty, "score": empty}
    xy, sigma, score = (torch.cat(parts) for parts in zip(*candidates))
    inside = (xy[:, 0] >= conf.border) & (xy[:, 0] <= width - 1 - conf.border)
    inside &= (xy[:, 1] >= conf.border) & (xy[:, 1] <= height - 1 - conf.border)
    xy, sigma, score = xy[inside], sigma[inside], score[inside]
    keep = spread_top_k(xy, score, (width, height), conf.max_keypoints, conf.grid_cells, conf.spread_share)
    factor = shrink_factors(image, seen)
    xy = (xy[keep] + 0.5) * factor - 0.5  # centre-origin: pixel i spans [i - 0.5, i + 0.5)
    return {"xy": xy, "sigma": sigma[keep] * factor.prod().sqrt(), "score": score[keep]}


def scale_neighbourhood(octaves: list[torch.Tensor], octave: int) -> torch.Tensor:
    """Levels (L + 2, h, w) of `octave` between its scale neighbours in the adjacent octaves.

    Level 0 of octave o + 1 (one level above the top of octave o) is upsampled to octave o's
    grid, the top level of octave o - 1 is max-pooled down to it; a missing neighbour is -inf.
    Without them the first and last level of every octave would be compared with one side
    only and collect maxima of scores that merely keep growing (or falling) with scale.
    Cell j of a stride-s map is centred on input pixel s*j + (s - 1) / 2, so 2x2 pooling and
    half-pixel (align_corners=False) upsampling line the grids up exactly.
    """
    maps = octaves[octave]
    size = maps.shape[-2:]

    def fit(level: torch.Tensor) -> torch.Tensor:  # crop or replicate-pad (1, 1, h', w') to size
        level = level[..., : size[0], : size[1]]
        pad = (0, size[1] - level.shape[-1], 0, size[0] - level.shape[-2])
        return F.pad(level, pad, mode="replicate") if any(pad) else level

    missing = torch.full((1, *size), -math.inf, dtype=maps.dtype)
    below = fit(F.max_pool2d(octaves[octave - 1][None, -1:], 2, ceil_mode=True))[0] if octave > 0 else missing
    above = (
        fit(F.interpolate(octaves[octave + 1][None, :1], scale_factor=2, mode="bilinear", align_corners=False))[0]
        if octave + 1 < len(octaves)
        else missing
    )
    return torch.cat([below, maps, above])


def neighbourhood_max(stack: torch.Tensor) -> torch.Tensor:
    """Maxima (L, h, w) over the 3x3x3 neighbourhoods of the inner levels of a stack (L + 2, h, w).

    Equal to a 3D max-pool, taken one axis at a time as the max of three shifted views: on one thread
    the 3D pool took 175 ms of the 690 ms that detecting in a 1536x1024 image cost, these under 15 ms
    (torch profiler).
    """
    maxima = F.pad(stack, (1, 1, 1, 1), value=-math.inf)  # the levels need none: the stack has its neighbours
    for dim in (2, 1, 0):
        maxima = _max_of_three_neighbours(maxima, dim)
    return maxima


def _max_of_three_neighbours(tensor: torch.Tensor, dim: int) -> torch.Tensor:
    """Maxima of each three consecutive entries along `dim` (size n -> n - 2)."""
    inner = tensor.shape[dim] - 2
    left, centre, right = (tensor.narrow(dim, start, inner) for start in range(3))
    return torch.maximum(torch.maximum(left, centre), right)


def cell_windows(
    maps: torch.Tensor, batch: torch.Tensor, level: torch.Tensor, row: torch.Tensor, col: torch.Tensor, radius: int = 1
) -> torch.Tensor:
    """Windows (N, 2r + 1, 2r + 1) of score maps (B, L, h, w) centred on cells (batch, level, row, col), each (N,).

    Cells beyond the map border repeat the border cell.
    """
    height, width = maps.shape[-2:]
    steps = torch.arange(-radius, radius + 1)
    rows = (row[:, None] + steps).clamp(0, height - 1)
    cols = (col[:, None] + steps).clamp(0, width - 1)
    return maps[batch[:, None, None], level[:, None, None], rows[:, :, None], cols[:, None, :]]


def soft_argmax_offset(window: torch.Tensor, sharpness: torch.Tensor) -> torch.Tensor:
    """Sub-cell offsets (N, 2) as (x, y), within (-1, 1) cells, of the peaks of 3x3 logit windows (N, 3, 3).

    The softmax-weighted mean cell position: trained end to end (msk.train.detector), it is the
    learned sub-pixel localisation, where a parabola fit would trust whatever shape the maps have.
    """
    weights = torch.softmax(sharpness * window.flatten(1), dim=1).view(-1, 3, 3)
    steps = torch.tensor([-1.0, 0.0, 1.0], dtype=window.dtype)
    return torch.stack([(weights.sum(dim=1) * steps).sum(dim=1), (weights.sum(dim=2) * steps).sum(dim=1)], dim=1)


def _refine_level(maps: torch.Tensor, level: torch.Tensor, row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    """Sub-level offsets (N,) of maxima of a stack (L, h, w), by a parabola through the level and its neighbours.

    A maximum next to a missing (-inf) level or on the stack's border keeps offset 0.
    """
    minus, centre, plus = (maps[(level + step).clamp(0, len(maps) - 1), row, col] for step in (-1, 0, 1))
    inner = (level > 0) & (level < len(maps) - 1) & torch.isfinite(minus) & torch.isfinite(plus)
    return torch.where(inner, parabola_vertex(minus, centre, plus), torch.zeros_like(centre))


def spread_top_k(
    xy: torch.Tensor, score: torch.Tensor, size: tuple[int, int], k: int, cells: int, share: float = 1.0
) -> torch.Tensor:
    """Indices of at most k of the points xy (N, 2), strongest first, spread over a cells x cells grid.

    Each cell first gets its best ceil(share * k / cells^2) points; remaining slots go to the
    strongest of the rest, so texture-rich areas still get more but no area is left empty.
    """
    if len(score) <= k:
        return torch.argsort(score, descending=True)
    order = torch.argsort(score, descending=True)
    cell = (xy[order, 1] * cells / size[1]).long().clamp(0, cells - 1) * cells + (
        xy[order, 0] * cells / size[0]
    ).long().clamp(0, cells - 1)
    # Rank of each point within its cell, in score order.
    sorted_cell, by_cell = torch.sort(cell, stable=True)
    first_of_cell = torch.searchsorted(sorted_cell, sorted_cell, side="left")
    rank = torch.empty_like(cell)
    rank[by_cell] = torch.arange(len(cell)) - first_of_cell
    quota = math.ceil(share * k / cells**2)
    primary = order[rank < quota]
    if len(primary) >= k:
        return primary[torch.argsort(score[primary], descending=True)[:k]]
    rest = order[rank >= quota][: k - len(primary)]
    chosen = torch.cat([primary, rest])
    return chosen[torch.argsort(score[chosen], descending=True)]
