"""HDF5 feature and match stores in hloc's layout, so hloc tools can read them as they are.

features.h5: one group per image, keyed by its path relative to the image folder:
    keypoints (N, 2) float32, centre-origin pixels at full resolution (hloc's convention),
    descriptors (D, N), scores (N,), scales (N,), orientations (N,), image_size (2,) = (W, H).
matches.h5: one group per pair, keyed `name0/name1` with '/' inside names replaced by '-':
    matches0 (N0,) int32, index into image 1 or -1; matching_scores0 (N0,) float32.
The root attribute `identity` (JSON) records the extractor or matcher and its options; a store
is never filled by two different ones.
"""

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .features import Features
from .keypoints import colmap_to_pixel, pixel_to_colmap

FEATURE_DATASETS = ("keypoints", "descriptors", "scores", "scales", "orientations", "image_size")
MATCH_DATASETS = ("matches0", "matching_scores0")


class StoreMismatchError(RuntimeError):
    """A store already holds results of another extractor or matcher configuration."""


def names_to_pair(name0: str, name1: str) -> str:
    """hloc's key of the pair (name0, name1) in a match store."""
    return "/".join((name0.replace("/", "-"), name1.replace("/", "-")))


class _Store:
    required: tuple[str, ...] = ()

    def __init__(self, path: Path, identity: dict[str, Any] | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = h5py.File(self.path, "a")
        if identity is not None:
            self._check_identity(identity)

    @property
    def identity(self) -> dict[str, Any] | None:
        stored = self._file.attrs.get("identity")
        return None if stored is None else json.loads(stored)

    def _check_identity(self, identity: dict[str, Any]) -> None:
        encoded = json.dumps(identity, sort_keys=True)
        stored = self._file.attrs.get("identity")
        if stored is None:
            self._file.attrs["identity"] = encoded
        elif stored != encoded:
            raise StoreMismatchError(
                f"{self.path} holds results of {stored}, not {encoded}; "
                "use another file or --overwrite"
            )

    def _complete(self, key: str) -> bool:
        group = self._file.get(key)
        return isinstance(group, h5py.Group) and all(name in group for name in self.required)

    def _replace_group(self, key: str, datasets: dict[str, np.ndarray]) -> None:
        """Write one entry; a half-written one left by a crash is replaced, never kept."""
        if key in self._file:
            del self._file[key]
        group = self._file.create_group(key)
        for name, data in datasets.items():
            group.create_dataset(name, data=data)
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FeatureStore(_Store):
    required = FEATURE_DATASETS

    def __contains__(self, name: str) -> bool:
        return self._complete(name)

    def write(self, name: str, features: Features, image_size: tuple[int, int]) -> None:
        """Store full-resolution features (COLMAP coordinates) of image `name` of size (W, H)."""
        self._replace_group(
            name,
            {
                "keypoints": colmap_to_pixel(features.keypoints).astype(np.float32),
                "descriptors": np.ascontiguousarray(features.descriptors.T),
                "scores": features.scores.astype(np.float32),
                "scales": features.scales.astype(np.float32),
                "orientations": features.orientations.astype(np.float32),
                "image_size": np.asarray(image_size, dtype=np.int64),
            },
        )

    def read(self, name: str) -> Features:
        group = self._file[name]
        return Features(
            keypoints=pixel_to_colmap(group["keypoints"][()]),
            scales=group["scales"][()],
            orientations=group["orientations"][()],
            scores=group["scores"][()],
            descriptors=np.ascontiguousarray(group["descriptors"][()].T),
        )

    def num_keypoints(self, name: str) -> int:
        return self._file[name]["keypoints"].shape[0]

    def image_size(self, name: str) -> tuple[int, int]:
        width, height = self._file[name]["image_size"][()]
        return int(width), int(height)


class MatchStore(_Store):
    required = MATCH_DATASETS

    def __contains__(self, pair: tuple[str, str]) -> bool:
        return self._complete(names_to_pair(*pair))

    def write(self, name0: str, name1: str, matches: np.ndarray, scores: np.ndarray, num_keypoints0: int) -> None:
        """Store matches (K, 2) of keypoint indices with their scores (K,)."""
        matches0 = np.full(num_keypoints0, -1, dtype=np.int32)
        matching_scores0 = np.zeros(num_keypoints0, dtype=np.float32)
        matches0[matches[:, 0]] = matches[:, 1]
        matching_scores0[matches[:, 0]] = scores
        self._replace_group(names_to_pair(name0, name1), {"matches0": matches0, "matching_scores0": matching_scores0})

    def read(self, name0: str, name1: str) -> tuple[np.ndarray, np.ndarray]:
        """Matches (K, 2) and scores (K,) of a stored pair."""
        group = self._file[names_to_pair(name0, name1)]
        matches0 = group["matches0"][()]
        (index0,) = np.nonzero(matches0 >= 0)
        return np.column_stack([index0, matches0[index0]]).astype(np.int64), group["matching_scores0"][()][index0]
