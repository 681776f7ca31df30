"""Matching image pairs into the match store and the database, then geometric verification.

Each pair's matches are written to the HDF5 match store and the database; pairs that have
matches but no two-view geometry are then verified by pycolmap, so every pair ends with a
valid configuration (pycolmap's mapper silently skips UNDEFINED ones). A rerun does only
what is missing; matches the database already holds unchanged keep their verification.
Matching and verification are deterministic (fixed RANSAC seed), so a resumed run ends with
the same database as an uninterrupted one.

Pairs are matched by worker threads (colmap_plugin.workers); features are read and results
written by the caller's thread, in pair order (h5py and the database are not shared across threads).
"""

import sys
import tempfile
import time
from collections import OrderedDict
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pycolmap
from tqdm import tqdm

from .database import clear_matches, database_errors, image_ids_by_name, open_database
from .features import Features, extractor_class
from .interrupts import deferred_interrupt
from .matchers import Matcher, create_matcher
from .pairs import write_pairs_file
from .store import FeatureStore, MatchStore, StoreMismatchError, remove_store
from .workers import ordered_map

RANSAC_SEED = 0


@dataclass
class MatchingConf:
    matcher: str | None = None  # mnn | ratio; None: the one the extraction method is made for
    matcher_options: dict[str, Any] = field(default_factory=dict)
    feature_cache_size: int = 64  # images kept in memory while walking the pairs
    workers: int | None = None  # pairs matched at once, one thread each; None: one per CPU core (at most 8)
    # A match store of another matcher, its options or version: refused (it may be someone's results), or,
    # where the store is a pipeline's own (`msk run`'s output folder), replaced, and the pairs matched again.
    replace_other_matches: bool = False


@dataclass
class MatchingSummary:
    matched: int = 0
    already_done: int = 0
    verified: int = 0
    num_matches: int = 0
    seconds_match: float = 0.0
    seconds_verify: float = 0.0

    def __str__(self) -> str:
        return (
            f"matched {self.matched} pairs ({self.num_matches} matches, {self.seconds_match:.1f} s), "
            f"{self.already_done} already done; verified {self.verified} pairs ({self.seconds_verify:.1f} s)"
        )


class MatchingError(RuntimeError):
    """Matching cannot start with these inputs; the message says what to run first."""


class _FeatureCache:
    """The most recently used images' features, read from the store on demand."""

    def __init__(self, store: FeatureStore, size: int):
        self.store, self.size = store, size
        self._cache: OrderedDict[str, Features] = OrderedDict()

    def __getitem__(self, name: str) -> Features:
        if name in self._cache:
            self._cache.move_to_end(name)
        else:
            self._cache[name] = self.store.read(name)
            if len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return self._cache[name]


def _write_database_matches(database: pycolmap.Database, id0: int, id1: int, matches: np.ndarray) -> None:
    """Write a pair's raw matches unless the database holds exactly these already.

    Different ones are replaced, and the geometry verified from them goes with them.
    """
    matches = np.ascontiguousarray(matches, dtype=np.uint32)
    if database.exists_matches(id0, id1) and np.array_equal(database.read_matches(id0, id1), matches):
        return
    with pycolmap.DatabaseTransaction(database):
        if database.exists_matches(id0, id1):
            database.delete_matches(id0, id1)
        if database.exists_two_view_geometry(id0, id1):
            database.delete_two_view_geometry(id0, id1)
        database.write_matches(id0, id1, matches)


def verify_pairs(
    database_path: Path, pairs: list[tuple[str, str]], seed: int = RANSAC_SEED, max_error: float | None = None
) -> None:
    """Geometric verification (pycolmap, pairs in parallel, RANSAC seeded) writing their two-view geometries.

    max_error: RANSAC's inlier threshold in pixels; None: COLMAP's (4).
    """
    if not pairs:
        return
    options = pycolmap.TwoViewGeometryOptions()
    options.ransac.random_seed = seed
    if max_error is not None:
        options.ransac.max_error = max_error
    with tempfile.TemporaryDirectory() as tmp:
        pairs_path = Path(tmp) / "pairs.txt"
        write_pairs_file(pairs, pairs_path)
        with database_errors(database_path):
            pycolmap.verify_matches(database_path, pairs_path, options)


def match_features(
    database_path: Path,
    features_path: Path,
    matches_path: Path,
    pairs: list[tuple[str, str]],
    conf: MatchingConf = MatchingConf(),
) -> MatchingSummary:
    summary = MatchingSummary()
    start = time.perf_counter()
    with FeatureStore(features_path, writable=False) as feature_store, open_database(database_path) as database:
        if feature_store.identity is None:
            raise MatchingError(f"{features_path} holds no features: run `msk extract` first")
        default_matcher = extractor_class(feature_store.identity["name"]).default_matcher
        matcher = create_matcher(conf.matcher or default_matcher, **conf.matcher_options)
        with _open_match_store(matches_path, matcher.identity(), database, conf.replace_other_matches) as match_store:
            to_verify = _match_pairs(pairs, matcher, feature_store, match_store, database, conf, summary)
    summary.seconds_match = time.perf_counter() - start
    start = time.perf_counter()
    verify_pairs(database_path, to_verify)
    summary.verified = len(to_verify)
    summary.seconds_verify = time.perf_counter() - start
    return summary


def _open_match_store(
    path: Path, identity: dict[str, Any], database: pycolmap.Database, replace_other: bool
) -> MatchStore:
    """The match store for `identity`; one of another matcher replaced if `replace_other`, else refused.

    The database's matches go with the store they came from (first, so that a crash in between leaves
    the old store to be replaced again): every pair the database holds stays in the store.
    """
    try:
        return MatchStore(path, identity)
    except StoreMismatchError:
        if not replace_other:
            raise
    print(f"note: {path} held matches of another matcher, its options or version; matching again", file=sys.stderr)
    clear_matches(database)
    remove_store(path)
    return MatchStore(path, identity)


def _match_pairs(
    pairs: list[tuple[str, str]],
    matcher: Matcher,
    feature_store: FeatureStore,
    match_store: MatchStore,
    database: pycolmap.Database,
    conf: MatchingConf,
    summary: MatchingSummary,
) -> list[tuple[str, str]]:
    """Match the pairs not done yet; return the pairs that still need verification."""
    ids = image_ids_by_name(database)
    missing = sorted({name for pair in pairs for name in pair if name not in feature_store or name not in ids})
    if missing:
        raise MatchingError(
            f"{len(missing)} images of the pairs have no features, e.g. {missing[0]!r}: run `msk extract` first"
        )
    todo = [
        (name0, name1)
        for name0, name1 in pairs
        if (name0, name1) not in match_store or not database.exists_matches(ids[name0], ids[name1])
    ]
    summary.already_done = len(pairs) - len(todo)
    features = _FeatureCache(feature_store, conf.feature_cache_size)

    def with_features(pairs: list[tuple[str, str]]) -> Iterator[tuple[Features, Features]]:
        for name0, name1 in pairs:  # read by the caller's thread, as ordered_map draws them
            yield features[name0], features[name1]

    def match(pair: tuple[Features, Features]) -> tuple[np.ndarray, np.ndarray]:
        return matcher.match(*pair)

    # Closed on errors too, so an error message starts on a line of its own.
    with (
        tqdm(total=len(todo), desc=f"match ({matcher.name})", unit="pair", disable=not todo) as progress,
        closing(ordered_map(match, with_features(todo), conf.workers)) as matched,
    ):
        for (name0, name1), ((features0, _), (matches, scores)) in zip(todo, matched):
            # Store first, then database: a pair the database holds is always in the store.
            with deferred_interrupt():
                match_store.write(name0, name1, matches, scores, len(features0))
                _write_database_matches(database, ids[name0], ids[name1], matches)
            progress.update()
            summary.matched += 1
            summary.num_matches += len(matches)
    return [(name0, name1) for name0, name1 in pairs if not database.exists_two_view_geometry(ids[name0], ids[name1])]
