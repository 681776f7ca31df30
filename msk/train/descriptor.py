"""`msk train descriptor`: the triplet network on SfM track patches.

HardNet-style batches: B tracks, two views each; for every anchor the hardest negative is the
closest non-matching patch in the batch (rows and columns of the distance matrix), and the
triplet margin loss pushes it beyond the positive by `margin`. Validation reports the
false-positive rate at 95% recall (FPR95) on held-out scenes, next to SIFT's on the same pairs.
"""

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from kornia.feature import SIFTDescriptor
from tqdm import tqdm

from msk.data.augment import AugmentConf, augment
from msk.descriptor import DescriptorConf, TripletDescriptor
from msk.weights import DESCRIPTOR_WEIGHTS

from .common import (
    TrackBank,
    fixed_validation_pairs,
    fpr_at_recall,
    optimisation_step,
    save_checkpoint,
    seed_everything,
)


@dataclass
class DescriptorTrainConf:
    steps: int = 2000
    batch_tracks: int = 192
    channels: tuple[int, int] = DescriptorConf.channels  # widths of the two convolution stages
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    margin: float = 1.0
    validate_every: int = 200
    validation_pairs: int = 20000
    seed: int = 0
    num_threads: int = 2


def hardest_negative_triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, margin: float) -> torch.Tensor:
    """Triplet margin loss of (B, D) matching rows with the hardest in-batch negative of each."""
    distance = torch.cdist(anchor, positive)  # (B, B), matches on the diagonal
    positive_distance = distance.diagonal()
    off_diagonal = distance + torch.eye(len(distance)) * 10  # unit vectors are never 10 apart
    hardest = torch.minimum(off_diagonal.min(dim=1).values, off_diagonal.min(dim=0).values)
    return torch.relu(margin + positive_distance - hardest).mean()


@torch.inference_mode()
def describe(model: torch.nn.Module, patches: np.ndarray, batch: int = 2048) -> torch.Tensor:
    """Descriptors (N, D) of uint8 patches (N, PS, PS)."""
    outputs = [
        model(torch.from_numpy(patches[i : i + batch]).float().div(255)[:, None]) for i in range(0, len(patches), batch)
    ]
    return torch.cat(outputs)


def validation_fpr95(model: torch.nn.Module, bank: TrackBank, pairs: tuple[np.ndarray, ...]) -> float:
    index0, index1, is_match = pairs
    descriptors = describe(model, bank.patches[np.concatenate([index0, index1])])
    distance = (descriptors[: len(index0)] - descriptors[len(index0) :]).norm(dim=1).numpy()
    return fpr_at_recall(distance, is_match)


class _RootSift(torch.nn.Module):
    """kornia's SIFT descriptor of patches with the RootSIFT normalisation COLMAP uses."""

    def __init__(self, patch_size: int):
        super().__init__()
        self.sift = SIFTDescriptor(patch_size, rootsift=True)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.sift(patches)


def train_descriptor(
    dataset: Path, output: Path = DESCRIPTOR_WEIGHTS, conf: DescriptorTrainConf = DescriptorTrainConf()
) -> dict:
    generator = seed_everything(conf.seed, conf.num_threads)
    train_bank, val_bank = TrackBank.load(dataset, "train"), TrackBank.load(dataset, "val")
    val_pairs = fixed_validation_pairs(val_bank, conf.validation_pairs, conf.seed)
    patch_size = train_bank.patches.shape[-1]
    model = TripletDescriptor(DescriptorConf(patch_size=patch_size, channels=conf.channels))
    sift_fpr95 = validation_fpr95(_RootSift(patch_size), val_bank, val_pairs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=conf.learning_rate, weight_decay=conf.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, conf.learning_rate, total_steps=conf.steps)
    augment_conf = AugmentConf()
    history, start = [], time.perf_counter()
    progress = tqdm(range(1, conf.steps + 1), desc="train descriptor", unit="step")
    for step in progress:
        model.train()
        anchor, positive = train_bank.sample_pairs(conf.batch_tracks, generator)
        anchor, positive = augment(anchor, augment_conf, generator), augment(positive, augment_conf, generator)
        loss = hardest_negative_triplet_loss(model(anchor), model(positive), conf.margin)
        optimisation_step(optimizer, schedule, loss)
        progress.set_postfix(loss=f"{loss.item():.3f}")
        if step % conf.validate_every == 0 or step == conf.steps:
            model.eval()
            fpr95 = validation_fpr95(model, val_bank, val_pairs)
            history.append({"step": step, "loss": round(loss.item(), 4), "val_fpr95": round(fpr95, 4)})
            tqdm.write(
                f"step {step}: loss {loss.item():.3f}, val FPR95 {100 * fpr95:.2f}% (SIFT {100 * sift_fpr95:.2f}%)"
            )
    meta = {
        "dataset": str(dataset),
        "train_tracks": len(train_bank),
        "val_tracks": len(val_bank),
        "train_conf": asdict(conf),
        "val_fpr95": history[-1]["val_fpr95"],
        "val_fpr95_sift": round(sift_fpr95, 4),
        "history": history,
        "seconds": round(time.perf_counter() - start, 1),
    }
    save_checkpoint(Path(output), model.eval(), meta)
    return meta
