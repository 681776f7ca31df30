"""What every MSK training run shares: seeding, the track-patch bank, metrics and checkpoints."""

import json
import random
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch


def seed_everything(seed: int, num_threads: int) -> torch.Generator:
    """Fix every source of randomness (and the thread count, which changes float sums)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(num_threads)
    torch.use_deterministic_algorithms(True)
    return torch.Generator().manual_seed(seed)


@dataclass
class TrackBank:
    """All track patches of one split in memory, for batched sampling (a few hundred MB at most).

    patches: (P, PS, PS) uint8; track_start, track_size, track_scene: (T,) int64 (tracks with >= 2 views).
    """

    patches: np.ndarray
    track_start: np.ndarray
    track_size: np.ndarray
    track_scene: np.ndarray

    @classmethod
    def load(cls, path: Path, split: str) -> "TrackBank":
        patches, starts, sizes, scenes, offset = [], [], [], [], 0
        with h5py.File(path, "r") as f:
            for group in f["scenes"].values():
                if group.attrs["split"] != split:
                    continue
                offsets = group["tracks/track_offsets"][()]
                patches.append(group["tracks/patches"][()])
                starts.append(offsets[:-1] + offset)
                sizes.append(np.diff(offsets))
                scenes.append(np.full(len(offsets) - 1, len(scenes)))
                offset += len(patches[-1])
        if not patches:
            raise ValueError(f"{path} has no {split} scenes")
        start, size, scene = np.concatenate(starts), np.concatenate(sizes), np.concatenate(scenes)
        keep = size >= 2
        return cls(np.concatenate(patches), start[keep], size[keep], scene[keep])

    def __len__(self) -> int:
        return len(self.track_start)

    def sample_pairs(self, num_tracks: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Two different views of `num_tracks` distinct random tracks: (B, 1, PS, PS) float in [0, 1] each."""
        tracks = torch.randperm(len(self), generator=generator)[:num_tracks].numpy()
        size = self.track_size[tracks]
        first = (torch.rand(len(tracks), generator=generator).numpy() * size).astype(np.int64)
        step = 1 + (torch.rand(len(tracks), generator=generator).numpy() * (size - 1)).astype(np.int64)
        second = (first + step) % size
        start = self.track_start[tracks]
        return self._tensor(start + first), self._tensor(start + second)

    def _tensor(self, index: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.patches[index]).float().div(255)[:, None]


def fpr_at_recall(distances: np.ndarray, is_match: np.ndarray, recall: float = 0.95) -> float:
    """False-positive rate at the distance threshold that accepts `recall` of the matching pairs."""
    threshold = np.quantile(distances[is_match], recall)
    return float(np.mean(distances[~is_match] <= threshold))


def fixed_validation_pairs(bank: TrackBank, num_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patch index pairs (K,), (K,) and labels (K,): half same-track, half different-track pairs.

    The two tracks of a non-matching pair come from the same scene (same place, camera and
    light), which makes negatives harder than pairs across scenes.
    """
    rng = np.random.default_rng(seed)
    half = num_pairs // 2
    tracks = rng.integers(0, len(bank), half)
    size = bank.track_size[tracks]
    first = rng.integers(0, size)
    second = (first + 1 + rng.integers(0, size - 1)) % size
    positives = (bank.track_start[tracks] + first, bank.track_start[tracks] + second)
    # Another track of the same scene: scenes are contiguous runs of tracks in the bank.
    scene_first = np.searchsorted(bank.track_scene, bank.track_scene[tracks], side="left")
    scene_size = np.searchsorted(bank.track_scene, bank.track_scene[tracks], side="right") - scene_first
    other = scene_first + (tracks - scene_first + 1 + rng.integers(0, np.maximum(scene_size - 1, 1))) % scene_size
    negatives = (
        bank.track_start[tracks] + rng.integers(0, size),
        bank.track_start[other] + rng.integers(0, bank.track_size[other]),
    )
    single = other == tracks  # a scene of one track has no negative to offer
    index0 = np.concatenate([positives[0], negatives[0][~single]])
    index1 = np.concatenate([positives[1], negatives[1][~single]])
    return index0, index1, np.arange(len(index0)) < half


def optimisation_step(optimizer: torch.optim.Optimizer, schedule, loss: torch.Tensor) -> None:
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    schedule.step()


def save_checkpoint(path: Path, model: torch.nn.Module, meta: dict) -> None:
    """Weights (float32 state dict), the model's config and how it was trained, in one small file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": model.config(), "state_dict": model.state_dict(), "meta": meta}, path)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
