"""`msk train detector`: the recursive detector on the SfM detector targets.

Each step cuts random crops (random zoom, photometric changes) from training images held in
memory, runs the detector and reads its logit at every detector sample inside the crop, at the
scale-space level of the sample's scale: tracked keypoints are positives, untracked detections
and empty spots negatives. Each positive is also a negative one octave above and below, so the
scale-space learns *at which scale* a point is worth detecting, not only where.
"""

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from kornia.geometry.transform import get_perspective_transform, warp_perspective
from tqdm import tqdm

from colmap_plugin.images import read_image
from colmap_plugin.keypoints import colmap_to_pixel
from msk.data.augment import AugmentConf, photometric
from msk.data.scenes import discover_scenes
from msk.detector import (
    DetectionConf,
    DetectorConf,
    MskDetector,
    cell_windows,
    detect,
    octave_stride,
    sample_scores,
    soft_argmax_offset,
)
from msk.weights import DETECTOR_WEIGHTS
from reconstruction_eval.homography_metrics import repeatability

from .common import optimisation_step, save_checkpoint, seed_everything


@dataclass
class DetectorTrainConf:
    steps: int = 1500
    batch_size: int = 8
    crop: int = 192
    max_image_size: int = 1024  # images are held in memory at this size
    zoom: tuple[float, float] = (0.5, 1.0)  # crop magnification range: more scales seen per image
    learning_rate: float = 3e-3
    localisation_weight: float = 1.0  # soft-argmax offset error (cells) of positives
    peak_weight: float = 2.0  # cross-entropy making a positive's cell the maximum of its 5x5 window
    validate_every: int = 250
    repeatability_pairs: int = 24  # validation crops warped by random homographies
    repeatability_crop: int = 384
    repeatability_keypoints: int = 512
    seed: int = 0
    num_threads: int = 2


@dataclass
class SampledImage:
    image: np.ndarray  # (H, W) uint8 at training size
    xy: np.ndarray  # (S, 2) centre-origin pixels at training size
    sigma: np.ndarray  # (S,) pixels at training size
    label: np.ndarray  # (S,) 1 = worth detecting


def load_images(dataset: Path, scenes_dir: Path, split: str, max_size: int) -> list[SampledImage]:
    """Every image of `split` that has detector samples, shrunk to `max_size`, with its samples."""
    scenes = {scene.name: scene for scene in discover_scenes(scenes_dir)}
    images = []
    with h5py.File(dataset, "r") as f:
        groups = [(name, g) for name, g in f["scenes"].items() if g.attrs["split"] == split]
        for name, group in tqdm(groups, desc=f"load {split} images", unit="scene"):
            detector = {key: group["detector"][key][()] for key in ("xy", "scale", "label", "image_idx")}
            for index, image_name in enumerate(group["images/name"][()]):
                mine = detector["image_idx"] == index
                if not mine.any():
                    continue
                loaded = read_image(scenes[name].image_dir / image_name.decode(), max_size)
                factor = np.array(loaded.scale_xy, np.float32)
                images.append(
                    SampledImage(
                        loaded.gray,
                        colmap_to_pixel(detector["xy"][mine] / factor),
                        detector["scale"][mine] / factor.mean(),
                        detector["label"][mine].astype(np.float32),
                    )
                )
    return images


def random_crops(images: list[SampledImage], conf: DetectorTrainConf, generator: torch.Generator):
    """A batch of zoomed crops (B, 1, C, C) in [0, 1] and their samples (xy, sigma, label, batch index)."""
    crops, xy, sigma, label, batch = [], [], [], [], []
    for b, pick in enumerate(torch.randint(len(images), (conf.batch_size,), generator=generator).tolist()):
        sample = images[pick]
        height, width = sample.image.shape
        zoom = conf.zoom[0] + (conf.zoom[1] - conf.zoom[0]) * torch.rand((), generator=generator).item()
        side = min(int(conf.crop / zoom), height, width)
        top = int(torch.randint(height - side + 1, (), generator=generator))
        left = int(torch.randint(width - side + 1, (), generator=generator))
        crop = torch.from_numpy(sample.image[top : top + side, left : left + side]).float().div(255)[None, None]
        crops.append(F.interpolate(crop, size=(conf.crop, conf.crop), mode="area"))
        scale = conf.crop / side
        # Centre-origin pixel p of the crop at its own size maps to (p + 0.5) * scale - 0.5 after resizing.
        local = (torch.from_numpy(sample.xy) - torch.tensor([left, top]) + 0.5) * scale - 0.5
        inside = ((local >= 4) & (local <= conf.crop - 5)).all(dim=1)
        xy.append(local[inside])
        sigma.append(torch.from_numpy(sample.sigma)[inside] * scale)
        label.append(torch.from_numpy(sample.label)[inside])
        batch.append(torch.full((int(inside.sum()),), b))
    return torch.cat(crops), torch.cat(xy), torch.cat(sigma), torch.cat(label), torch.cat(batch)


def detector_loss(
    model: MskDetector, crops, xy, sigma, label, batch, conf: DetectorTrainConf = DetectorTrainConf()
) -> tuple[torch.Tensor, dict]:
    octaves = model(crops)
    index = model.scale_index(sigma)
    positive = label > 0
    # Positives are negatives one octave away in scale: the level must match the scale.
    octave = model.conf.levels_per_octave
    all_xy = torch.cat([xy, xy[positive], xy[positive]])
    all_index = torch.cat([index, index[positive] - octave, index[positive] + octave])
    all_label = torch.cat([label, torch.zeros(2 * int(positive.sum()))])
    all_batch = torch.cat([batch, batch[positive], batch[positive]])
    valid = (all_index > -0.5) & (all_index < model.num_levels - 0.5)
    logits = sample_scores(octaves, all_xy[valid], all_index[valid], all_batch[valid])
    target = all_label[valid]
    pos_weight = (target == 0).sum() / (target == 1).sum().clamp(min=1)
    classification = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)
    in_range = positive & (index > -0.5) & (index < model.num_levels - 0.5)
    offset_error, peak = localisation_terms(model, octaves, xy[in_range], index[in_range], batch[in_range])
    loss = classification + conf.localisation_weight * offset_error.mean() + conf.peak_weight * peak.mean()
    at_own_level = torch.arange(len(target)) < int(valid[: len(label)].sum())
    predicted = logits[at_own_level] > 0
    truth = target[at_own_level] > 0
    stats = {
        "recall": float((predicted & truth).sum() / truth.sum().clamp(min=1)),
        "precision": float((predicted & truth).sum() / predicted.sum().clamp(min=1)),
        "offset_error_cells": float(offset_error.detach().mean()),
    }
    return loss, stats


def localisation_terms(
    model: MskDetector, octaves: list[torch.Tensor], xy: torch.Tensor, index: torch.Tensor, batch: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per positive (N,): the soft-argmax offset error in cells (L1) and the peak cross-entropy.

    Each positive at centre-origin input pixels xy (N, 2) and scale-space index (N,) lies in some
    cell of its level's map; the detector must peak at that cell (its 5x5 window's maximum) and
    the soft-argmax of the 3x3 window around it must land on the exact sub-cell position, which
    is what `msk.detector.detect` reads out.
    """
    levels_per_octave = model.conf.levels_per_octave
    level = index.round().long()
    errors, peaks = [], []
    for octave, maps in enumerate(octaves):
        mine = (level // levels_per_octave) == octave
        if not mine.any():
            continue
        stride = octave_stride(octave)
        cell = (xy[mine] - (stride - 1) / 2) / stride
        nearest = cell.round().long()
        height, width = maps.shape[-2:]
        col, row = nearest[:, 0].clamp(0, width - 1), nearest[:, 1].clamp(0, height - 1)
        window = cell_windows(maps, batch[mine], level[mine] % levels_per_octave, row, col, radius=2)
        offset = soft_argmax_offset(window[:, 1:4, 1:4], model.sharpness)
        errors.append((offset - (cell - nearest)).abs().sum(dim=1))
        peaks.append(-F.log_softmax(window.flatten(1), dim=1)[:, 12])
    if not errors:
        zero = torch.zeros(1)
        return zero, zero
    return torch.cat(errors), torch.cat(peaks)


def homography_pairs(
    images: list[SampledImage], conf: DetectorTrainConf, generator: torch.Generator, max_shift: float = 0.15
) -> list[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
    """Crops (1, 1, S, S) of random images, the same crops warped by random homographies (each corner moved by
    up to `max_shift` * S) with new lighting, and the homographies (3, 3) in centre-origin pixels."""
    side = conf.repeatability_crop
    corners = torch.tensor([[0.0, 0.0], [side - 1, 0.0], [side - 1, side - 1], [0.0, side - 1]])
    pairs = []
    for pick in torch.randint(len(images), (conf.repeatability_pairs,), generator=generator).tolist():
        image = images[pick].image
        height, width = image.shape
        if min(height, width) < side:
            continue
        top = int(torch.randint(height - side + 1, (), generator=generator))
        left = int(torch.randint(width - side + 1, (), generator=generator))
        crop = torch.from_numpy(image[top : top + side, left : left + side]).float().div(255)[None, None]
        moved = corners + (torch.rand(4, 2, generator=generator) * 2 - 1) * max_shift * side
        homography = get_perspective_transform(corners[None], moved[None])
        warped = warp_perspective(crop, homography, (side, side), align_corners=True)
        pairs.append((crop, photometric(warped, AugmentConf(), generator), homography[0].double().numpy()))
    return pairs


@torch.no_grad()
def validation_repeatability(
    model: MskDetector, pairs: list[tuple[torch.Tensor, torch.Tensor, np.ndarray]], max_keypoints: int
) -> float:
    """Mean repeatability (3 px) of the detector's strongest keypoints over homography pairs."""
    scores = []
    for crop, warped, homography in pairs:
        found = [
            detect(model, image, DetectionConf(max_keypoints=max_keypoints))["xy"].numpy() for image in (crop, warped)
        ]
        side = crop.shape[-1]
        value = repeatability(*found, homography, (side, side), (side, side))
        if value is not None:
            scores.append(value)
    return float(np.mean(scores)) if scores else 0.0


def train_detector(
    dataset: Path,
    scenes_dir: Path,
    output: Path = DETECTOR_WEIGHTS,
    conf: DetectorTrainConf = DetectorTrainConf(),
    model_conf: DetectorConf = DetectorConf(),
) -> dict:
    generator = seed_everything(conf.seed, conf.num_threads)
    train_images = load_images(dataset, scenes_dir, "train", conf.max_image_size)
    val_images = load_images(dataset, scenes_dir, "val", conf.max_image_size)
    val_generator = torch.Generator().manual_seed(conf.seed + 1)
    val_batches = [random_crops(val_images, conf, val_generator) for _ in range(8)]
    val_pairs = homography_pairs(val_images, conf, val_generator)
    model = MskDetector(model_conf)
    optimizer = torch.optim.AdamW(model.parameters(), lr=conf.learning_rate)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, conf.learning_rate, total_steps=conf.steps)
    augment_conf = AugmentConf(noise=0.01)
    history, start = [], time.perf_counter()
    progress = tqdm(range(1, conf.steps + 1), desc="train detector", unit="step")
    for step in progress:
        model.train()
        crops, *samples = random_crops(train_images, conf, generator)
        loss, _ = detector_loss(model, photometric(crops, augment_conf, generator), *samples, conf=conf)
        optimisation_step(optimizer, schedule, loss)
        progress.set_postfix(loss=f"{loss.item():.3f}")
        if step % conf.validate_every == 0 or step == conf.steps:
            model.eval()
            with torch.no_grad():
                results = [detector_loss(model, *batch, conf=conf) for batch in val_batches]
            entry = {
                "step": step,
                "val_loss": round(float(np.mean([r[0].item() for r in results])), 4),
                **{
                    k: round(float(np.mean([r[1][k] for r in results])), 4)
                    for k in ("precision", "recall", "offset_error_cells")
                },
                "repeatability": round(validation_repeatability(model, val_pairs, conf.repeatability_keypoints), 4),
            }
            history.append(entry)
            tqdm.write(f"step {step}: {entry}")
    meta = {
        "dataset": str(dataset),
        "train_images": len(train_images),
        "val_images": len(val_images),
        "train_conf": asdict(conf),
        "validation": history[-1],
        "history": history,
        "seconds": round(time.perf_counter() - start, 1),
    }
    save_checkpoint(Path(output), model.eval(), meta)
    return meta
