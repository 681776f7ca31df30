"""HDF5 feature and match stores in hloc's layout, so hloc tools can read them as they are.

features.h5: one group per image, keyed by its path relative to the image folder:
    keypoints (N, 2) float32, centre-origin pixels at full resolution (hloc's convention),
    descriptors (D, N) uint8 (SIFT) or float16 (learned; features.stored_descriptors), scores (N,), scales (N,),
    orientations (N,), image_size (2,) = (W, H).
matches.h5: one group per pair, keyed `name0/name1` with '/' inside names replaced by '-':
    matches (K, 2) int32 keypoint indices and scores (K,) float32: every match, as the database holds them;
    matches0 (N0,) int32, index into image 1 or -1, and matching_scores0 (N0,) float32: hloc's view,
    which holds one match per keypoint of image 0, its most probable one. A learned matcher's
    candidates proposed from both images can join a keypoint to two (0.8% of `msk`'s matches on the
    fountain); only `matches` keeps both.
The root attribute `identity` (JSON) records the extractor or matcher and its options; a store
is never filled by two different ones.

Crash safety: every entry is flushed as soon as it is written, so a killed run leaves at most the
entry being written incomplete, and incomplete entries count as missing. Rarely (about one kill in
a hundred that lands inside a write), HDF5 metadata is left inconsistent. Opening a store for
writing therefore checks every entry; a damaged store is rebuilt from its readable entries (the
damaged file is kept beside it) and the missing ones are simply computed again.
"""

import json
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

import h5py
import numpy as np

from .errors import MismatchError
from .features import Features, stored_descriptors
from .keypoints import colmap_to_pixel, pixel_to_colmap

FEATURE_DATASETS = ("keypoints", "descriptors", "scores", "scales", "orientations", "image_size")
MATCH_DATASETS = ("matches", "scores", "matches0", "matching_scores0")

# What h5py raises for a file or an object it cannot read.
_DAMAGE = (OSError, RuntimeError, KeyError, ValueError)
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class StoreError(RuntimeError):
    """A store that cannot be used as it is; the message says why and what to do."""


class StoreMismatchError(StoreError, MismatchError):
    """A store already holds results of another extractor or matcher configuration."""


def names_to_pair(name0: str, name1: str) -> str:
    """hloc's key of the pair (name0, name1) in a match store."""
    return "/".join((name0.replace("/", "-"), name1.replace("/", "-")))


def _complete_groups(dataset_paths: Iterable[str], required: tuple[str, ...]) -> set[str]:
    """Groups that hold every required dataset, from the paths of the datasets in a file."""
    found: dict[str, set[str]] = {}
    for path in dataset_paths:
        group, _, name = path.rpartition("/")
        if name in required:
            found.setdefault(group, set()).add(name)
    return {group for group, names in found.items() if len(names) == len(required)}


def _hdf5_or_empty(path: Path) -> bool:
    """Whether a file is HDF5 (its signature sits at 0, 512, 1024, 2048, ...) or empty."""
    with open(path, "rb") as file:
        offset = 0
        while head := file.read(len(HDF5_SIGNATURE)):
            if head == HDF5_SIGNATURE:
                return True
            offset = max(512, 2 * offset)
            file.seek(offset)
        return offset == 0


def _check_hdf5_or_empty(path: Path) -> None:
    if path.is_file() and not _hdf5_or_empty(path):
        raise StoreError(f"{path} is not an HDF5 store; use another file")


def remove_store(path: Path) -> None:
    """Delete a store to start over; a file that is not one is refused, never deleted."""
    path = Path(path)
    _check_hdf5_or_empty(path)
    path.unlink(missing_ok=True)


def _readable_datasets(group: h5py.Group, prefix: str = "") -> Iterator[str]:
    """Paths of the datasets below `group`, skipping whatever is damaged."""
    try:
        children = list(group)
    except _DAMAGE:
        return
    for name in children:
        try:
            child = group[name]
        except _DAMAGE:
            continue
        if isinstance(child, h5py.Dataset):
            yield prefix + name
        else:
            yield from _readable_datasets(child, f"{prefix}{name}/")


class _Store:
    required: tuple[str, ...] = ()
    outdated_layout: tuple[str, ...] = ()  # the datasets of an entry written by an older version
    replace_hint = "use another file"
    repair_hint = "run the step that writes it again"

    def __init__(self, path: Path, identity: dict[str, Any] | None = None, writable: bool = True):
        self.path = Path(path)
        if writable:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise StoreError(f"cannot create {self.path} ({error.filename}: {error.strerror})") from error
        elif not self.path.is_file():
            raise StoreError(f"{self.path} not found")
        _check_hdf5_or_empty(self.path)  # never rebuild someone else's file
        try:
            self._file, self._keys, outdated = self._open("a" if writable else "r")
        except StoreError:
            raise
        except _DAMAGE as error:
            if not writable:
                raise StoreError(f"{self.path} is damaged ({error}); {self.repair_hint}") from error
            self._rebuild()
            self._file, self._keys, outdated = self._open("a")
        if identity is not None:
            try:
                self._check_identity(identity)
            except StoreMismatchError:
                self._file.close()
                raise
        self._note_outdated(outdated)  # only for a store that is used: one of another identity is not

    def _open(self, mode: str) -> tuple[h5py.File, set[str], set[str]]:
        """The open file, the keys of its complete entries and of those of an older layout; one of _DAMAGE if
        it is damaged."""
        try:
            file = h5py.File(self.path, mode)
        except OSError as error:
            if "unable to lock file" in str(error):  # HDF5 locks files open for writing
                raise StoreError(f"{self.path} is in use by another process; wait for it to finish") from error
            raise
        try:
            return file, *self._scan(file)
        except BaseException:
            file.close()
            raise

    def _scan(self, file: h5py.File) -> tuple[set[str], set[str]]:
        """Keys of the complete entries and of those of an older layout; reading every object header finds a
        damaged file."""
        datasets: list[str] = []

        def visit(name: bytes, info) -> None:
            if info.type == h5py.h5o.TYPE_DATASET:
                datasets.append(name.decode())

        h5py.h5o.visit(file.id, visit, info=True)
        complete = _complete_groups(datasets, self.required)
        return complete, _complete_groups(datasets, self.outdated_layout) - complete

    def _note_outdated(self, keys: set[str]) -> None:
        """Say that entries of an older layout will be computed again (a rerun does so silently otherwise)."""

    def _rebuild(self) -> None:
        """Replace a damaged store by a copy of its readable complete entries; keep the damaged file."""
        rebuilt = self.path.with_name(self.path.name + ".rebuilt")
        kept = 0
        with h5py.File(rebuilt, "w") as target:
            try:
                with h5py.File(self.path, "r") as source:
                    kept = self._copy_readable(source, target)
            except _DAMAGE:
                pass  # not even the file's root is readable: start empty
        damaged = self.path.with_name(self.path.name + ".damaged")
        os.replace(self.path, damaged)
        os.replace(rebuilt, self.path)
        print(
            f"warning: {self.path} was damaged (by an interrupted run?): rebuilt with its {kept} readable entries, "
            f"the others will be computed again; the damaged file is kept as {damaged}",
            file=sys.stderr,
        )

    def _copy_readable(self, source: h5py.File, target: h5py.File) -> int:
        try:
            target.attrs["identity"] = source.attrs["identity"]
        except _DAMAGE:
            pass  # missing or unreadable: this run sets it again
        kept = 0
        for key in sorted(_complete_groups(_readable_datasets(source), self.required)):
            try:
                datasets = {name: source[key][name][()] for name in self.required}
            except _DAMAGE:
                continue
            group = target.create_group(key)
            for name, data in datasets.items():
                group.create_dataset(name, data=data)
            kept += 1
        return kept

    @property
    def identity(self) -> dict[str, Any] | None:
        stored = self._file.attrs.get("identity")
        return None if stored is None else json.loads(stored)

    def _check_identity(self, identity: dict[str, Any]) -> None:
        encoded = json.dumps(identity, sort_keys=True)
        stored = self._file.attrs.get("identity")
        if stored is None:
            self._file.attrs["identity"] = encoded
            self._file.flush()
        elif stored != encoded:
            raise StoreMismatchError(f"{self.path} holds results of {stored}, not {encoded}", self.replace_hint)

    def _replace_group(self, key: str, datasets: dict[str, np.ndarray]) -> None:
        """Write one entry; a half-written one left by a crash is replaced, never kept."""
        self._keys.discard(key)
        if key in self._file:
            del self._file[key]
        group = self._file.create_group(key)
        for name, data in datasets.items():
            group.create_dataset(name, data=data)
        self._file.flush()
        self._keys.add(key)

    def _delete(self, key: str) -> None:
        self._keys.discard(key)
        if key in self._file:
            del self._file[key]
            self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FeatureStore(_Store):
    required = FEATURE_DATASETS
    replace_hint = "use another --features file, or --overwrite to extract again"
    repair_hint = "run `msk extract` again to repair it"

    def __contains__(self, name: str) -> bool:
        return name in self._keys

    def write(self, name: str, features: Features, image_size: tuple[int, int]) -> None:
        """Store full-resolution features (COLMAP coordinates) of image `name` of size (W, H)."""
        self._replace_group(
            name,
            {
                "keypoints": colmap_to_pixel(features.keypoints).astype(np.float32),
                "descriptors": np.ascontiguousarray(stored_descriptors(features.descriptors).T),
                "scores": features.scores.astype(np.float32),
                "scales": features.scales.astype(np.float32),
                "orientations": features.orientations.astype(np.float32),
                "image_size": np.asarray(image_size, dtype=np.int64),
            },
        )

    def delete(self, name: str) -> None:
        self._delete(name)

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
    replace_hint = "use another --matches file"
    outdated_layout = ("matches0", "matching_scores0")  # before every match was kept

    def _note_outdated(self, keys: set[str]) -> None:
        if keys:
            print(
                f"note: {self.path} holds {len(keys)} pair(s) stored by an older version, which kept one match "
                "per keypoint; they will be matched again",
                file=sys.stderr,
            )

    def __contains__(self, pair: tuple[str, str]) -> bool:
        return names_to_pair(*pair) in self._keys

    def write(self, name0: str, name1: str, matches: np.ndarray, scores: np.ndarray, num_keypoints0: int) -> None:
        """Store matches (K, 2) of keypoint indices with their scores (K,); image 0 has num_keypoints0 keypoints."""
        matches = np.asarray(matches, dtype=np.int32).reshape(-1, 2)
        scores = np.asarray(scores, dtype=np.float32)
        # hloc's view: each keypoint of image 0 keeps its most probable match.
        by_keypoint_then_score = np.lexsort((-scores, matches[:, 0]))
        _, first = np.unique(matches[by_keypoint_then_score, 0], return_index=True)
        best = by_keypoint_then_score[first]
        matches0 = np.full(num_keypoints0, -1, dtype=np.int32)
        matching_scores0 = np.zeros(num_keypoints0, dtype=np.float32)
        matches0[matches[best, 0]] = matches[best, 1]
        matching_scores0[matches[best, 0]] = scores[best]
        datasets = {"matches": matches, "scores": scores, "matches0": matches0, "matching_scores0": matching_scores0}
        self._replace_group(names_to_pair(name0, name1), datasets)

    def read(self, name0: str, name1: str) -> tuple[np.ndarray, np.ndarray]:
        """Every match (K, 2) int64 of a stored pair and its score (K,) float32."""
        group = self._file[names_to_pair(name0, name1)]
        return group["matches"][()].astype(np.int64), group["scores"][()]
