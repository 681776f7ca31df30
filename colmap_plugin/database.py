"""Reading and writing COLMAP databases through pycolmap (no hand-written SQL).

COLMAP's own errors (a locked or damaged database, ...) come out as DatabaseError with a clear
message. Before pycolmap opens a file, its SQLite header is checked: pycolmap would silently
restamp a database of a newer COLMAP as its own, so those are refused.
"""

import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pycolmap

from .features import Features, stored_descriptors
from .interrupts import deferred_interrupt

CAMERA_MODES = {
    "auto": pycolmap.CameraMode.AUTO,
    "single": pycolmap.CameraMode.SINGLE,
    "per-folder": pycolmap.CameraMode.PER_FOLDER,
    "per-image": pycolmap.CameraMode.PER_IMAGE,
}

SQLITE_SIGNATURE = b"SQLite format 3\x00"
USER_VERSION_OFFSET = 60  # SQLite header field holding PRAGMA user_version, where COLMAP stores its version


class DatabaseError(RuntimeError):
    """A database that cannot be used as it is; the message says why and what to do."""


def version_number(version: str) -> int:
    """COLMAP's number for a version, as it stores it in user_version: '4.2.1' -> 4020100."""
    major, minor, patch = (int(part) for part in (version.split(".") + ["0", "0"])[:3])
    return major * 1_000_000 + minor * 10_000 + patch * 100


def version_name(number: int) -> str:
    if number == 0:
        return "a program that records no version (an old COLMAP or a script)"
    if number < 1_000_000:  # COLMAP 3.x numbered 3.8 as 3800
        return f"COLMAP before 4.0 (version number {number})"
    return f"COLMAP {number // 1_000_000}.{number // 10_000 % 100}.{number // 100 % 100}"


PYCOLMAP_VERSION = version_number(pycolmap.__version__)


def check_database_file(path: Path) -> None:
    """Refuse what pycolmap must not open: folders, non-SQLite files, databases of a newer COLMAP.

    A database of an older COLMAP is upgraded in place by pycolmap, as COLMAP itself does; it is
    reported on stderr.
    """
    path = Path(path)
    if path.is_dir():
        raise DatabaseError(f"{path} is a folder, not a COLMAP database")
    if not path.is_file() or path.stat().st_size == 0:
        return  # pycolmap creates it
    with open(path, "rb") as file:
        header = file.read(USER_VERSION_OFFSET + 4)
    if not header.startswith(SQLITE_SIGNATURE):
        raise DatabaseError(f"{path} is not a COLMAP database (not an SQLite file)")
    written_by = int.from_bytes(header[USER_VERSION_OFFSET:], "big")
    # Schemas change with minor versions only, so patch releases count as the same.
    if written_by // 10_000 > PYCOLMAP_VERSION // 10_000:
        raise DatabaseError(
            f"{path} was written by {version_name(written_by)}, newer than the pycolmap {pycolmap.__version__} "
            "used here, which could misread it or downgrade it: use a new database"
        )
    if written_by // 10_000 < PYCOLMAP_VERSION // 10_000:
        print(
            f"note: {path} was written by {version_name(written_by)}; pycolmap {pycolmap.__version__} "
            "upgrades its schema in place, as COLMAP does",
            file=sys.stderr,
        )


def _explain(path: Path, error: RuntimeError) -> DatabaseError | None:
    """A clear DatabaseError for one of COLMAP's database errors; None for other errors."""
    message = str(error)
    if "database is locked" in message:
        return DatabaseError(
            f"{path} is locked by another process (COLMAP, or another msk run?): close it and run again"
        )
    if "No registered database factory succeeded" in message:  # opening failed; COLMAP logs the reason
        if not path.exists():
            return DatabaseError(f"cannot create {path} (is its folder writable?)")
        if not os.access(path, os.W_OK):
            return DatabaseError(f"{path} is read-only")
        return DatabaseError(
            f"cannot open {path}: it is locked by another process (COLMAP, or another msk run?) or damaged "
            "(--verbose shows COLMAP's reason)"
        )
    if "SQLite error" in message:
        return DatabaseError(f"{path}: {message.rpartition('SQLite error: ')[2]}")
    return None


@contextmanager
def database_errors(path: Path) -> Iterator[None]:
    """Turn COLMAP's database errors raised inside the block into a clear DatabaseError."""
    try:
        yield
    except RuntimeError as error:
        explained = _explain(Path(path), error) if type(error) is RuntimeError else None
        if explained is None:
            raise
        raise explained from error


@contextmanager
def open_database(path: Path) -> Iterator[pycolmap.Database]:
    """Open (creating if needed) a COLMAP database and close it afterwards."""
    path = Path(path)
    check_database_file(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DatabaseError(f"cannot create {path} ({error.filename}: {error.strerror})") from error
    with database_errors(path):
        database = pycolmap.Database.open(path)
        try:
            yield database
        finally:
            database.close()


def image_ids_by_name(database: pycolmap.Database) -> dict[str, int]:
    return {image.name: image.image_id for image in database.read_all_images()}


def import_images(
    database_path: Path,
    image_dir: Path,
    names: list[str],
    camera_mode: str = "auto",
    camera_model: str = "SIMPLE_RADIAL",
) -> None:
    """Add images (paths relative to `image_dir`) with cameras from EXIF, as COLMAP does: all or none.

    pycolmap's importer commits each new camera and its image in separate transactions, so a killed
    import would leave cameras without images, and a resumed one could group cameras differently.
    It therefore runs on a scratch database whose new rows are copied over in one transaction.
    With a single camera, images added by a later (resumed) run join the existing camera.
    """
    if not names:
        return
    options = pycolmap.ImageReaderOptions()
    options.camera_model = camera_model
    with open_database(database_path) as database:  # creates it
        cameras = database.read_all_cameras()
        shared = cameras[:1] if camera_mode == "single" else []
        # Databases of COLMAP before rigs have none: the importer then makes one, copied like new rigs.
        shared_rigs = [rig for rig in map(database.read_rig_with_sensor, [c.sensor_id for c in shared]) if rig]
    with tempfile.TemporaryDirectory(prefix="msk-import-") as scratch_dir:
        scratch = Path(scratch_dir) / "import.db"
        with open_database(scratch) as staging:
            for camera, rig in zip(shared, shared_rigs):
                staging.write_camera(camera, use_camera_id=True)
                staging.write_rig(rig, use_rig_id=True)
                options.existing_camera_id = camera.camera_id
        with database_errors(scratch):
            pycolmap.import_images(scratch, image_dir, CAMERA_MODES[camera_mode], names, options)
        with open_database(scratch) as staging, open_database(database_path) as database:
            with deferred_interrupt(), pycolmap.DatabaseTransaction(database):
                _copy_imported(staging, database, shared, shared_rigs)


def _copy_imported(
    staging: pycolmap.Database,
    database: pycolmap.Database,
    shared: list[pycolmap.Camera],
    shared_rigs: list[pycolmap.Rig],
) -> None:
    """Copy the cameras, rigs, images, frames and pose priors of `staging`, with fresh ids, into `database`.

    Rows are written in their staging order, so ids come out as a direct import would give them.
    A shared camera and its rig exist in both with the same ids.
    """
    camera_ids = {camera.camera_id: camera.camera_id for camera in shared}
    for camera in sorted(staging.read_all_cameras(), key=lambda camera: camera.camera_id):
        if camera.camera_id not in camera_ids:
            camera_ids[camera.camera_id] = database.write_camera(camera)

    def sensor(sensor_id: pycolmap.sensor_t) -> pycolmap.sensor_t:
        return pycolmap.sensor_t(sensor_id.type, camera_ids[sensor_id.id])

    rig_ids = {rig.rig_id: rig.rig_id for rig in shared_rigs}
    for rig in sorted(staging.read_all_rigs(), key=lambda rig: rig.rig_id):
        if rig.rig_id not in rig_ids:
            copy = pycolmap.Rig()
            copy.add_ref_sensor(sensor(rig.ref_sensor_id))  # the importer makes one-camera rigs
            rig_ids[rig.rig_id] = database.write_rig(copy)
    image_ids = {}
    for image in sorted(staging.read_all_images(), key=lambda image: image.image_id):
        copy = pycolmap.Image(name=image.name, camera_id=camera_ids[image.camera_id])
        image_ids[image.image_id] = database.write_image(copy)

    def data(data_id: pycolmap.data_t) -> pycolmap.data_t:
        return pycolmap.data_t(sensor(data_id.sensor_id), image_ids[data_id.id])

    for frame in sorted(staging.read_all_frames(), key=lambda frame: frame.frame_id):
        copy = pycolmap.Frame()
        copy.rig_id = rig_ids[frame.rig_id]
        for data_id in frame.data_ids:
            copy.add_data_id(data(data_id))
        database.write_frame(copy)
    for prior in sorted(staging.read_all_pose_priors(), key=lambda prior: prior.pose_prior_id):
        prior.corr_data_id = data(prior.corr_data_id)
        database.write_pose_prior(prior)


def descriptors_for_database(descriptors: np.ndarray) -> pycolmap.FeatureDescriptors:
    """SIFT uint8 descriptors as COLMAP's own; learned ones as their raw LEARNED_DESCRIPTOR_DTYPE bytes."""
    if descriptors.dtype == np.uint8:
        return pycolmap.FeatureDescriptors(pycolmap.FeatureExtractorType.SIFT, descriptors)
    data = np.ascontiguousarray(stored_descriptors(descriptors)).view(np.uint8)
    return pycolmap.FeatureDescriptors(pycolmap.FeatureExtractorType.UNDEFINED, data)


def write_features(database: pycolmap.Database, image_id: int, features: Features) -> None:
    """Keypoints and descriptors of one image, together or not at all."""
    keypoints, descriptors = features.colmap_keypoints(), descriptors_for_database(features.descriptors)
    # pycolmap commits a transaction even when the block raises: hold Ctrl-C until both are written.
    with deferred_interrupt(), pycolmap.DatabaseTransaction(database):
        database.write_keypoints(image_id, keypoints)
        database.write_descriptors(image_id, descriptors)


def holds_features(database: pycolmap.Database, image_id: int, features: Features) -> bool:
    """Whether the database holds exactly these features for the image, as write_features stores them."""
    expected = descriptors_for_database(features.descriptors)
    stored = database.read_descriptors(image_id)
    return (
        np.array_equal(database.read_keypoints(image_id), features.colmap_keypoints())
        and stored.type == expected.type
        and np.array_equal(stored.data, expected.data)
    )


def clear_matches(database: pycolmap.Database) -> None:
    """Forget every match and two-view geometry (images, cameras and features stay)."""
    with deferred_interrupt(), pycolmap.DatabaseTransaction(database):
        database.clear_matches()
        database.clear_two_view_geometries()


def clear_features_and_matches(database: pycolmap.Database) -> None:
    """Forget every keypoint, descriptor, match and two-view geometry (images and cameras stay)."""
    with deferred_interrupt(), pycolmap.DatabaseTransaction(database):
        database.clear_keypoints()
        database.clear_descriptors()
        database.clear_matches()
        database.clear_two_view_geometries()
