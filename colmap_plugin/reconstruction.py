"""Sparse reconstruction from a verified database with pycolmap's incremental or global mapper."""

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pycolmap

MAPPERS = ("incremental", "global")


@dataclass
class ReconstructionConf:
    mapper: str = "incremental"  # incremental | global
    num_threads: int = -1
    seed: int = 0  # fixes RANSAC and initial-pair sampling so reruns agree
    refine_intrinsics: bool = True  # False: the database's cameras are calibrated, bundle adjustment keeps them
    # COLMAP 4.2's incremental mapper retries an image it cannot register from 2D-3D matches by a
    # structure-less fallback, a generalised relative-pose RANSAC over its 2D-2D matches. With the
    # thousands of matches per pair that learned features give, one attempt took 2 minutes: lund
    # (29 images) mapped in 21.5 min instead of 4 s, for one image more (18 against 17). On ten other
    # scenes, `msk` and COLMAP's SIFT alike, it changed nothing; it can win images (vggsfm_cake) and
    # lose them (BENCHMARKS.md, session 15), but its cost cannot be bounded through pycolmap.
    structure_less_fallback: bool = False


class ReconstructionError(RuntimeError):
    """No model could be built; the message says what to try."""


def reconstruct(
    database_path: Path, image_dir: Path, output_dir: Path, conf: ReconstructionConf = ReconstructionConf()
) -> pycolmap.Reconstruction:
    """Map the database and write the largest model (COLMAP binary) into `output_dir`."""
    if conf.mapper not in MAPPERS:
        raise ValueError(f"unknown mapper '{conf.mapper}'; available: {', '.join(MAPPERS)}")
    pycolmap.set_random_seed(conf.seed)
    with tempfile.TemporaryDirectory() as models_dir:
        if conf.mapper == "incremental":
            options = pycolmap.IncrementalPipelineOptions()
            options.num_threads = conf.num_threads
            options.random_seed = conf.seed
            options.structure_less_registration_fallback = conf.structure_less_fallback
            if not conf.refine_intrinsics:
                options.ba_refine_focal_length = options.ba_refine_principal_point = False
                options.ba_refine_extra_params = False
            models = pycolmap.incremental_mapping(database_path, image_dir, models_dir, options)
        else:
            options = pycolmap.GlobalPipelineOptions()
            options.num_threads = conf.num_threads
            options.random_seed = conf.seed
            if not conf.refine_intrinsics:
                adjustment = options.mapper.bundle_adjustment
                adjustment.refine_focal_length = adjustment.refine_principal_point = False
                adjustment.refine_extra_params = False
            models = pycolmap.global_mapping(database_path, image_dir, models_dir, options)
    if not models:
        raise ReconstructionError(
            "the mapper built no model: too few verified matches between the images "
            "(try more pairs, a larger --max-size, or check that the images overlap)"
        )
    largest = max(models.values(), key=lambda model: model.num_reg_images())
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    largest.write(Path(output_dir))
    return largest
