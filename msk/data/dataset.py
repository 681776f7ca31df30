"""torch Datasets over a training set built by build.py: descriptor triplets and detector samples.

Only the small index arrays are held in memory; patches are read from the file on demand, so a
dataset of any size costs a few MB per worker. The HDF5 file is opened lazily in each worker
(an h5py handle must not cross a fork). Randomness comes from torch's generator, which the
DataLoader seeds differently in every worker.
"""

from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from .augment import AugmentConf, augment


class _SplitFile(Dataset):
    """The scenes of one split ("train", "val" or "all") of a training-set file."""

    def __init__(self, path: Path, split: str, augment_conf: AugmentConf | None):
        self.path = Path(path)
        self.augment_conf = augment_conf
        with h5py.File(self.path, "r") as f:
            self.scenes = [name for name, g in f["scenes"].items() if split in ("all", g.attrs["split"])]
        if not self.scenes:
            raise ValueError(f"{path} has no {split} scenes")
        self._file: h5py.File | None = None

    def _group(self, scene: int) -> h5py.Group:
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        return self._file["scenes"][self.scenes[scene]]

    def __getstate__(self) -> dict:
        return self.__dict__ | {"_file": None}

    def _to_tensor(self, patches: np.ndarray, shift: bool) -> torch.Tensor:
        """uint8 (B, PS, PS) -> float (B, 1, PS, PS) in [0, 1], augmented if configured."""
        x = torch.from_numpy(patches).float().div(255)[:, None]
        return augment(x, self.augment_conf, shift=shift) if self.augment_conf else x


def _locate(cumulative: np.ndarray, index: int) -> tuple[int, int]:
    """(scene, index within the scene) of a global `index`, given the cumulative counts (S,)."""
    scene = int(np.searchsorted(cumulative, index, side="right"))
    return scene, index - (int(cumulative[scene - 1]) if scene else 0)


class TrackTriplets(_SplitFile):
    """One item per track: two views of the track (anchor, positive) and a view of another track
    of the same scene (negative, as hard as random gets: same place, camera and light).

    Item: {"anchor", "positive", "negative": (1, PS, PS) float in [0, 1], "scene", "track": int}.
    """

    def __init__(self, path: Path, split: str = "train", augment_conf: AugmentConf | None = AugmentConf()):
        super().__init__(path, split, augment_conf)
        with h5py.File(self.path, "r") as f:
            self.offsets = [f["scenes"][name]["tracks/track_offsets"][:] for name in self.scenes]
        self.cumulative = np.cumsum([len(o) - 1 for o in self.offsets])

    def __len__(self) -> int:
        return int(self.cumulative[-1])

    def _random_view(self, scene: int, track: int) -> int:
        start, end = self.offsets[scene][track : track + 2]
        return int(start + torch.randint(int(end - start), ()).item())

    def __getitem__(self, index: int) -> dict:
        scene, track = _locate(self.cumulative, index)
        start, end = self.offsets[scene][track : track + 2]
        anchor, positive = (start + torch.randperm(int(end - start))[:2]).tolist()
        num_tracks = len(self.offsets[scene]) - 1
        # A random other track; a scene of a single track borrows a negative from the next scene.
        neg_scene = scene if num_tracks > 1 else (scene + 1) % len(self.scenes)
        other = int(torch.randint(len(self.offsets[neg_scene]) - 1, ()).item())
        if neg_scene == scene and other == track:
            other = (other + 1) % num_tracks
        negative = self._random_view(neg_scene, other)

        patches = self._group(scene)["tracks/patches"]
        ap = np.stack([patches[anchor], patches[positive], self._group(neg_scene)["tracks/patches"][negative]])
        x = self._to_tensor(ap, shift=True)
        return {"anchor": x[0], "positive": x[1], "negative": x[2], "scene": scene, "track": track}


class DetectorSamples(_SplitFile):
    """One item per detector sample: an upright patch at the sample's scale and its label.

    Item: {"patch": (1, PS, PS) float in [0, 1], "label": float 1 = worth detecting,
    "kind": int (targets.py), "scale": float sigma in pixels}. Augmentation never shifts the
    patch: the label belongs to its centre.
    """

    def __init__(self, path: Path, split: str = "train", augment_conf: AugmentConf | None = AugmentConf()):
        super().__init__(path, split, augment_conf)
        with h5py.File(self.path, "r") as f:
            self.cumulative = np.cumsum([len(f["scenes"][name]["detector/label"]) for name in self.scenes])

    def __len__(self) -> int:
        return int(self.cumulative[-1])

    def __getitem__(self, index: int) -> dict:
        scene, i = _locate(self.cumulative, index)
        group = self._group(scene)["detector"]
        x = self._to_tensor(group["patches"][i][None], shift=False)
        return {
            "patch": x[0],
            "label": float(group["label"][i]),
            "kind": int(group["kind"][i]),
            "scale": float(group["scale"][i]),
        }
