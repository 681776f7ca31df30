"""Batch feature extraction over an image folder into the HDF5 store and the COLMAP database.

Features go to the HDF5 store first (one image at a time, flushed), then the images that
succeeded are imported into the database and their features copied there. A skipped image
therefore never leaves a row behind, and a rerun only does what is missing.

Features already in the database are kept only if they are this extractor's: images the store
knows must have as many keypoints there, and any other image is extracted first and must
reproduce the database's features exactly (extraction is deterministic), which lets a rerun
rebuild a lost or damaged store without touching the database.

Images are extracted by worker threads (colmap_plugin.workers), each with its own extractor, and
written in the order of the work list by the caller's thread.
"""

import threading
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .database import (
    clear_features_and_matches,
    holds_features,
    image_ids_by_name,
    import_images,
    open_database,
    write_features,
)
from .errors import MismatchError
from .features import Extractor, Features, create_extractor
from .images import ImageReadError, list_images, read_image
from .interrupts import deferred_interrupt
from .store import FeatureStore, remove_store
from .workers import ordered_map


@dataclass
class ExtractionConf:
    method: str = "msk"  # msk | sift+msk | sift (colmap_plugin.features.EXTRACTORS)
    max_size: int | None = 1600  # long side in pixels; larger images are shrunk for extraction
    max_keypoints: int | None = None  # None: the backend's default
    upright: bool = False  # no orientation estimates: better matches when no photo is turned in-plane
    camera_mode: str = "auto"  # auto | single | per-folder | per-image, as in COLMAP
    camera_model: str = "SIMPLE_RADIAL"
    overwrite: bool = False  # replace features of another kind instead of refusing
    workers: int | None = None  # images extracted at once, one thread each; None: one per CPU core (at most 8)


@dataclass
class ExtractionSummary:
    extracted: list[str] = field(default_factory=list)
    already_done: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # name -> reason
    seconds: float = 0.0

    def skip(self, name: str, reason: str) -> None:
        """Record a skipped image and say so at once, in one line."""
        self.skipped[name] = reason
        tqdm.write(f"skipped {name}: {reason}")

    def __str__(self) -> str:
        lines = [
            f"extracted {len(self.extracted)} images, {self.already_done} already done, "
            f"{len(self.skipped)} skipped ({self.seconds:.1f} s)"
        ]
        lines += [f"  skipped {name}: {reason}" for name, reason in sorted(self.skipped.items())]
        return "\n".join(lines)


class FeatureKindMismatchError(MismatchError):
    """The database already holds features that this run did not write."""


def _mismatch(database_path: Path, count: int, example: str) -> FeatureKindMismatchError:
    return FeatureKindMismatchError(
        f"{database_path} already holds features of another kind for {count} images (e.g. {example})",
        "use another database or --overwrite to replace them",
    )


def _unproven_images(database_path: Path, store: FeatureStore, names: list[str]) -> dict[str, int]:
    """Images with features in the database but not in the store: {name: image_id}.

    Refuses at once where the database's features cannot be this extractor's: a different number
    of keypoints than the store has, or an image that is not in the folder to extract it again.
    """
    on_disk = set(names)
    with open_database(database_path) as database:
        with_features = {
            image.name: image.image_id
            for image in database.read_all_images()
            if database.exists_keypoints(image.image_id)
        }
        foreign = [
            name
            for name, image_id in with_features.items()
            if (name in store and database.num_keypoints_for_image(image_id) != store.num_keypoints(name))
            or (name not in store and name not in on_disk)
        ]
    if foreign:
        raise _mismatch(database_path, len(foreign), foreign[0])
    return {name: image_id for name, image_id in with_features.items() if name not in store}


def extract_features(
    image_dir: Path, database_path: Path, features_path: Path, conf: ExtractionConf = ExtractionConf()
) -> ExtractionSummary:
    start = time.perf_counter()
    image_dir, database_path, features_path = Path(image_dir), Path(database_path), Path(features_path)
    names = list_images(image_dir)
    options = {"max_keypoints": conf.max_keypoints, "upright": conf.upright}
    unused = [create_extractor(conf.method, **options)]  # serves the first worker; the others make their own
    identity = {**unused[0].identity(), "max_size": conf.max_size}
    # The database first: a locked, foreign or newer one is refused before any file is written.
    with open_database(database_path) as database:
        if conf.overwrite:
            remove_store(features_path)
            clear_features_and_matches(database)

    summary = ExtractionSummary()
    with FeatureStore(features_path, identity) as store:
        unproven = _unproven_images(database_path, store, names)
        # Unproven images first: a database of another kind is refused after the first (and the few the
        # workers had started), not all.
        todo = list(unproven) + [name for name in names if name not in store and name not in unproven]
        summary.already_done = len(names) - len(todo)
        worker = threading.local()

        def extract(name: str) -> tuple[Features, tuple[int, int]] | ImageReadError:
            if not hasattr(worker, "extractor"):
                try:
                    worker.extractor = unused.pop()  # atomic: one worker gets it
                except IndexError:
                    worker.extractor = create_extractor(conf.method, **options)
            try:
                return _extract_image(worker.extractor, image_dir / name, conf.max_size)
            except ImageReadError as error:
                return error

        # Closed on errors too, so an error message starts on a line of its own.
        with (
            tqdm(total=len(todo), desc=f"extract ({conf.method})", unit="img", disable=not todo) as progress,
            closing(ordered_map(extract, todo, conf.workers)) as extracted_in_order,
        ):
            for name, extracted in extracted_in_order:
                progress.update()
                if isinstance(extracted, ImageReadError):
                    summary.skip(name, str(extracted))
                    continue
                features, size = extracted
                with deferred_interrupt():
                    store.write(name, features, size)
                if name in unproven:
                    _prove(database_path, store, name, unproven[name], len(unproven))
                summary.extracted.append(name)
        _write_database(image_dir, database_path, store, names, conf, summary)
    summary.seconds = time.perf_counter() - start
    return summary


def _extract_image(extractor: Extractor, path: Path, max_size: int | None) -> tuple[Features, tuple[int, int]]:
    """Full-resolution features of one image and the image's size; ImageReadError says why not."""
    image = read_image(path, max_size)
    try:
        features = extractor.extract(image.gray).rescaled(image.scale_xy)
    except Exception as error:  # one odd image must not stop a batch of thousands
        raise ImageReadError(f"extraction failed ({type(error).__name__}: {error})") from error
    if len(features) == 0:
        raise ImageReadError("no keypoints found (blank or textureless image?)")
    return features, image.original_size


def _prove(database_path: Path, store: FeatureStore, name: str, image_id: int, num_unproven: int) -> None:
    """Refuse the database if its features of `name` differ from those just stored (which are dropped)."""
    with open_database(database_path) as database:
        same = holds_features(database, image_id, store.read(name))  # as the store gives them back
    if not same:
        with deferred_interrupt():
            store.delete(name)
        raise _mismatch(database_path, num_unproven, name)


def _write_database(
    image_dir: Path,
    database_path: Path,
    store: FeatureStore,
    names: list[str],
    conf: ExtractionConf,
    summary: ExtractionSummary,
) -> None:
    """Import the stored images missing from the database and write the features it lacks."""
    with open_database(database_path) as database:
        in_database = image_ids_by_name(database)
    new = [name for name in names if name in store and name not in in_database]
    import_images(database_path, image_dir, new, conf.camera_mode, conf.camera_model)
    with open_database(database_path) as database:
        ids = image_ids_by_name(database)
        for name in new:
            if name not in ids:  # COLMAP skips an image whose size does not fit the camera it would share
                with deferred_interrupt():
                    store.delete(name)
                if name in summary.extracted:
                    summary.extracted.remove(name)
                reason = "COLMAP did not import it: its size differs from the camera it would share"
                summary.skip(name, f"{reason} (--camera-mode {conf.camera_mode})")
        for name, image_id in ids.items():
            if name in store and not database.exists_keypoints(image_id):
                write_features(database, image_id, store.read(name))
