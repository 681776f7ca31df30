"""Batch feature extraction over an image folder into the HDF5 store and the COLMAP database.

Features go to the HDF5 store first (one image at a time, flushed), then the images that
succeeded are imported into the database and their features copied there. A skipped image
therefore never leaves a row behind, and a rerun only does what is missing.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .database import clear_features_and_matches, image_ids_by_name, import_images, open_database, write_features
from .features import create_extractor
from .images import ImageReadError, list_images, read_image
from .store import FeatureStore


@dataclass
class ExtractionConf:
    method: str = "sift"
    max_size: int | None = 1600  # long side in pixels; larger images are shrunk for extraction
    max_keypoints: int | None = None  # None: the backend's default
    camera_mode: str = "auto"  # auto | single | per-folder | per-image, as in COLMAP
    camera_model: str = "SIMPLE_RADIAL"
    overwrite: bool = False  # replace features of another kind instead of refusing


@dataclass
class ExtractionSummary:
    extracted: list[str] = field(default_factory=list)
    already_done: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # name -> reason
    seconds: float = 0.0

    def __str__(self) -> str:
        lines = [
            f"extracted {len(self.extracted)} images, {self.already_done} already done, "
            f"{len(self.skipped)} skipped ({self.seconds:.1f} s)"
        ]
        lines += [f"  skipped {name}: {reason}" for name, reason in sorted(self.skipped.items())]
        return "\n".join(lines)


class FeatureKindMismatchError(RuntimeError):
    """The database already holds features that this run did not write."""


def _check_database_features(database_path: Path, store: FeatureStore) -> None:
    """Refuse to mix: every image with keypoints in the database must come from this store."""
    with open_database(database_path) as database:
        foreign = [
            image.name
            for image in database.read_all_images()
            if database.exists_keypoints(image.image_id)
            and (image.name not in store or database.num_keypoints_for_image(image.image_id) != store.num_keypoints(image.name))
        ]
    if foreign:
        raise FeatureKindMismatchError(
            f"{database_path} already holds features of another kind for {len(foreign)} images "
            f"(e.g. {foreign[0]}); use another database or --overwrite to replace them"
        )


def extract_features(
    image_dir: Path, database_path: Path, features_path: Path, conf: ExtractionConf = ExtractionConf()
) -> ExtractionSummary:
    start = time.perf_counter()
    image_dir, database_path, features_path = Path(image_dir), Path(database_path), Path(features_path)
    names = list_images(image_dir)
    extractor = create_extractor(conf.method, max_keypoints=conf.max_keypoints)
    identity = {**extractor.identity(), "max_size": conf.max_size}
    if conf.overwrite:
        features_path.unlink(missing_ok=True)
        if database_path.exists():
            with open_database(database_path) as database:
                clear_features_and_matches(database)

    summary = ExtractionSummary()
    with FeatureStore(features_path, identity) as store:
        _check_database_features(database_path, store)
        todo = [name for name in names if name not in store]
        summary.already_done = len(names) - len(todo)
        for name in tqdm(todo, desc=f"extract ({conf.method})", unit="img", disable=not todo):
            try:
                image = read_image(image_dir / name, conf.max_size)
            except ImageReadError as error:
                summary.skipped[name] = str(error)
                tqdm.write(f"skipped {name}: {error}")
                continue
            features = extractor.extract(image.gray).rescaled(image.scale_xy)
            store.write(name, features, image.original_size)
            summary.extracted.append(name)

        with open_database(database_path) as database:
            in_database = image_ids_by_name(database)
        import_images(
            database_path,
            image_dir,
            [name for name in names if name in store and name not in in_database],
            conf.camera_mode,
            conf.camera_model,
        )
        with open_database(database_path) as database:
            for name, image_id in image_ids_by_name(database).items():
                if name in store and not database.exists_keypoints(image_id):
                    write_features(database, image_id, store.read(name))
    summary.seconds = time.perf_counter() - start
    return summary
