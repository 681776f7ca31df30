"""COLMAP's own SIFT (pycolmap, CPU) as a plugin backend, and COLMAP's own extraction into a database."""

from pathlib import Path

import numpy as np
import pycolmap

from .database import CAMERA_MODES, import_images
from .features import Extractor, Features


def extract_colmap_sift(
    database: Path,
    image_dir: Path,
    names: list[str],
    options: pycolmap.FeatureExtractionOptions,
    camera_mode: str = "auto",
) -> None:
    """COLMAP's SIFT extraction of `names` (relative to `image_dir`) into `database`, as COLMAP runs it.

    Importing first numbers the images in the order of `names`; the threaded extractor numbers them in
    the order its threads finish, which changes pair orientation, RANSAC samples and the model.
    """
    import_images(database, image_dir, names, camera_mode)
    pycolmap.extract_features(
        database, image_dir, names, CAMERA_MODES[camera_mode], extraction_options=options, device=pycolmap.Device.cpu
    )


class SiftExtractor(Extractor):
    name = "sift"
    default_conf = {"max_keypoints": 8192, "num_threads": -1, "upright": False}

    def __init__(self, **conf):
        super().__init__(**conf)
        options = pycolmap.FeatureExtractionOptions()
        options.num_threads = self.conf["num_threads"]
        options.sift.max_num_features = self.conf["max_keypoints"]
        options.sift.upright = self.conf["upright"]
        self._sift = pycolmap.FeatureExtractor.create(options, pycolmap.Device.cpu)

    def extract(self, image: np.ndarray) -> Features:
        keypoints, descriptors = self._sift.extract(pycolmap.Bitmap.from_array(image))
        # COLMAP's SIFT already reports corner-origin coordinates.
        rows = pycolmap.keypoints_to_matrix(keypoints).reshape(-1, 4)
        return Features(
            keypoints=rows[:, :2].copy(),
            scales=rows[:, 2].copy(),
            orientations=rows[:, 3].copy(),
            # pycolmap exposes no detector response: all keypoints count as equally good.
            scores=np.ones(len(rows), dtype=np.float32),
            descriptors=np.ascontiguousarray(descriptors.data, dtype=np.uint8),  # (N, 128), also for N = 0
        )
