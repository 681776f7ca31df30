"""Reading and writing COLMAP databases through pycolmap (no hand-written SQL)."""

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pycolmap

from .features import Features

CAMERA_MODES = {
    "auto": pycolmap.CameraMode.AUTO,
    "single": pycolmap.CameraMode.SINGLE,
    "per-folder": pycolmap.CameraMode.PER_FOLDER,
    "per-image": pycolmap.CameraMode.PER_IMAGE,
}


@contextmanager
def open_database(path: Path) -> Iterator[pycolmap.Database]:
    """Open (creating if needed) a COLMAP database and close it afterwards."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    database = pycolmap.Database.open(Path(path))
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
    """Add images (paths relative to `image_dir`) with cameras from EXIF, as COLMAP does.

    With a single camera, images added by a later (resumed) run join the existing camera.
    """
    if not names:
        return
    options = pycolmap.ImageReaderOptions()
    options.camera_model = camera_model
    with open_database(database_path) as database:  # creates it: pycolmap's import does not
        cameras = database.read_all_cameras()
    if camera_mode == "single" and cameras:
        options.existing_camera_id = cameras[0].camera_id
    pycolmap.import_images(database_path, image_dir, CAMERA_MODES[camera_mode], names, options)


def descriptors_for_database(descriptors: np.ndarray) -> pycolmap.FeatureDescriptors:
    """SIFT uint8 descriptors as COLMAP's own; float descriptors as their raw float32 bytes."""
    if descriptors.dtype == np.uint8:
        return pycolmap.FeatureDescriptors(pycolmap.FeatureExtractorType.SIFT, descriptors)
    data = np.ascontiguousarray(descriptors, dtype=np.float32).view(np.uint8)
    return pycolmap.FeatureDescriptors(pycolmap.FeatureExtractorType.UNDEFINED, data)


def write_features(database: pycolmap.Database, image_id: int, features: Features) -> None:
    """Keypoints and descriptors of one image, together or not at all."""
    with pycolmap.DatabaseTransaction(database):
        database.write_keypoints(image_id, features.colmap_keypoints())
        database.write_descriptors(image_id, descriptors_for_database(features.descriptors))


def clear_features_and_matches(database: pycolmap.Database) -> None:
    """Forget every keypoint, descriptor, match and two-view geometry (images and cameras stay)."""
    with pycolmap.DatabaseTransaction(database):
        database.clear_keypoints()
        database.clear_descriptors()
        database.clear_matches()
        database.clear_two_view_geometries()
