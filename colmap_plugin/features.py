"""The feature-extractor interface every backend implements, and the registry of backends.

A backend takes a grey image and returns keypoints (x, y, scale, orientation, score) and
descriptors. Coordinates are COLMAP corner-origin in the image it was given; the extraction
step maps them to the file's full resolution. Adding a backend is one line in `EXTRACTORS`.
"""

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .keypoints import rescale_colmap

# Learned descriptors are kept in float16, as hloc stores them: 3.1 MB instead of 6.3 MB per image of 12,288
# keypoints, in the feature store and again in the database, for matches that differ only at rounding (a
# fountain's 55 pairs matched from float16 descriptors: 4 of 131,047 matches differed; session 19).
LEARNED_DESCRIPTOR_DTYPE = np.float16


def stored_descriptors(descriptors: np.ndarray) -> np.ndarray:
    """(N, D) descriptors as the feature store and the database keep them: SIFT's uint8 as they are, learned
    ones in LEARNED_DESCRIPTOR_DTYPE, whatever type a backend returns."""
    return descriptors if descriptors.dtype == np.uint8 else descriptors.astype(LEARNED_DESCRIPTOR_DTYPE, copy=False)


@dataclass
class Features:
    """Keypoints and descriptors of one image.

    keypoints: (N, 2) float32, COLMAP corner-origin pixel coordinates.
    scales: (N,) float32, in pixels of the same image.
    orientations: (N,) float32, radians.
    scores: (N,) float32, detector confidence (higher is better).
    descriptors: (N, D), uint8 (SIFT, as COLMAP stores it) or LEARNED_DESCRIPTOR_DTYPE (learned, L2-normalised).
    """

    keypoints: np.ndarray
    scales: np.ndarray
    orientations: np.ndarray
    scores: np.ndarray
    descriptors: np.ndarray

    def __len__(self) -> int:
        return len(self.keypoints)

    def rescaled(self, scale_xy: tuple[float, float]) -> "Features":
        """The same features in an image resized by `scale_xy` (original / resized)."""
        return Features(
            keypoints=rescale_colmap(self.keypoints, scale_xy).astype(np.float32),
            scales=(self.scales * float(np.mean(scale_xy))).astype(np.float32),
            orientations=self.orientations,
            scores=self.scores,
            descriptors=self.descriptors,
        )

    def colmap_keypoints(self) -> np.ndarray:
        """(N, 4) float32 rows [x, y, scale, orientation], the layout COLMAP's database takes."""
        return np.ascontiguousarray(np.column_stack([self.keypoints, self.scales, self.orientations]), dtype=np.float32)


class BackendUnavailableError(RuntimeError):
    """A registered backend that cannot run here (e.g. its weights are missing); says why."""


class Configurable:
    """A named component whose options are `default_conf` updated by the caller's."""

    name: ClassVar[str]
    default_conf: ClassVar[dict[str, Any]] = {}

    def __init__(self, **conf: Any):
        unknown = set(conf) - set(self.default_conf)
        if unknown:
            raise ValueError(f"unknown options for '{self.name}': {', '.join(sorted(unknown))}")
        self.conf = {**self.default_conf, **conf}

    def identity(self) -> dict[str, Any]:
        """What makes results of this component comparable: stored beside them to refuse mixing."""
        return {"name": self.name, **self.conf}


class Extractor(Configurable, ABC):
    """A feature-extraction backend. Subclasses set `name` and `default_conf`."""

    default_conf: ClassVar[dict[str, Any]] = {"max_keypoints": 8192}
    default_matcher: ClassVar[str] = "ratio"  # the matcher its descriptors are meant for

    @abstractmethod
    def extract(self, image: np.ndarray) -> Features:
        """Features of a grey (H, W) uint8 image, in its own corner-origin coordinates."""


# name -> "module:Class", imported on demand so one backend's dependencies never load another's.
EXTRACTORS: dict[str, str] = {
    "sift": "colmap_plugin.sift:SiftExtractor",
    "sift+msk": "msk.plugin:SiftMskExtractor",
    "msk": "msk.plugin:MskExtractor",
}


def import_registered(registry: dict[str, str], name: str, kind: str) -> type:
    """The class registered as `name` ("module:Class"), with a clear error for unknown names."""
    if name not in registry:
        raise ValueError(f"unknown {kind} '{name}'; available: {', '.join(sorted(registry))}")
    module_name, class_name = registry[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def available_methods() -> list[str]:
    return sorted(EXTRACTORS)


def extractor_class(method: str) -> type[Extractor]:
    return import_registered(EXTRACTORS, method, "method")


def create_extractor(method: str, **conf: Any) -> Extractor:
    """Instantiate the backend `method` with options `conf` (None values take the defaults)."""
    return extractor_class(method)(**{key: value for key, value in conf.items() if value is not None})
