"""COLMAP's own SIFT (pycolmap, CPU) as a plugin backend, and COLMAP's own extraction into a database."""

from pathlib import Path

import numpy as np
import pycolmap

from .database import CAMERA_MODES, import_images
from .features import Extractor, Features
from .sift_process import SiftProcess


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
    """COLMAP's SIFT, run in a process of its own (colmap_plugin.sift_process): pycolmap holds the GIL."""

    name = "sift"
    default_conf = {"max_keypoints": 8192, "num_threads": -1, "upright": False}

    def __init__(self, **conf):
        super().__init__(**conf)
        self._sift = SiftProcess(self.conf["max_keypoints"], self.conf["upright"], self.conf["num_threads"])

    def extract(self, image: np.ndarray) -> Features:
        rows, descriptors = self._sift.extract(image)  # COLMAP's SIFT already reports corner-origin coordinates
        return Features(
            keypoints=rows[:, :2].copy(),
            scales=rows[:, 2].copy(),
            orientations=rows[:, 3].copy(),
            # pycolmap exposes no detector response: all keypoints count as equally good.
            scores=np.ones(len(rows), dtype=np.float32),
            descriptors=descriptors,
        )
