"""One method's pipeline run on an image folder, timed stage by stage.

The reference is COLMAP's own SIFT pipeline, called through pycolmap as it is (feature
extraction, matching, geometric verification). Plugin methods go through `colmap_plugin`.
Both share the image list, the pairs, the verification options and the mapper, so the
features and matches are the only difference between them.
"""

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pycolmap

from colmap_plugin.database import open_database
from colmap_plugin.extraction import ExtractionConf, extract_features
from colmap_plugin.images import list_images
from colmap_plugin.matching import MatchingConf, match_features, verify_pairs
from colmap_plugin.pairs import select_pairs, write_pairs_file
from colmap_plugin.reconstruction import ReconstructionConf, ReconstructionError, reconstruct
from colmap_plugin.sift import extract_colmap_sift

REFERENCE = "colmap-sift"
STAGES = ("extract", "match", "verify", "map")


@dataclass
class RunConf:
    max_size: int | None = 1600  # long image side for extraction, reference and plugin alike
    max_keypoints: int | None = None  # plugin methods only; None: each method's default
    pairs: str = "exhaustive"  # exhaustive | sequential[:N] | PAIRS_FILE
    mapper: str = "incremental"  # incremental | global
    camera_mode: str = "auto"  # auto | single | per-folder | per-image, for the reference and plugin alike
    # A COLMAP model (e.g. the ground truth) whose cameras replace every method's estimated ones,
    # by image name, before verification; the mapper then keeps them: poses alone are estimated.
    cameras_from: Path | None = None
    seed: int = 0  # mapper sampling, so that reruns agree
    num_threads: int = -1  # extraction and matching (their results do not depend on it)
    mapper_threads: int = 1  # more threads make the model differ from run to run


@dataclass
class MethodRun:
    """Where a method's files are, the model it built (None if none) and its stage times in seconds."""

    name: str
    output: Path
    model: pycolmap.Reconstruction | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    error: str | None = None  # why no model was built

    @property
    def database(self) -> Path:
        return self.output / "database.db"

    @property
    def sparse(self) -> Path:
        return self.output / "sparse"


def _fresh_run(name: str, output_dir: Path) -> MethodRun:
    """A run in an emptied folder: timings are only meaningful when every stage runs."""
    run = MethodRun(name, Path(output_dir))
    shutil.rmtree(run.output, ignore_errors=True)
    run.output.mkdir(parents=True)
    return run


class KnownCamerasError(ValueError):
    """The model given for the cameras does not cover the images; the message says which."""


def use_known_cameras(database_path: Path, model_dir: Path) -> None:
    """Give each camera of the database the model and parameters its images' namesakes have in the COLMAP model."""
    model = pycolmap.Reconstruction(Path(model_dir))
    known = {image.name: model.cameras[image.camera_id] for image in model.images.values()}
    with open_database(database_path) as database:
        for image in database.read_all_images():
            if image.name not in known:
                raise KnownCamerasError(f"{model_dir} has no camera for {image.name}")
            camera, calibrated = database.read_camera(image.camera_id), known[image.name]
            if (camera.width, camera.height) != (calibrated.width, calibrated.height):
                raise KnownCamerasError(
                    f"{image.name} is {camera.width}x{camera.height} but its camera in {model_dir} is "
                    f"{calibrated.width}x{calibrated.height}"
                )
            camera.model, camera.params = calibrated.model, calibrated.params
            camera.has_prior_focal_length = True
            database.update_camera(camera)


def _use_known_cameras(run: MethodRun, conf: RunConf) -> None:
    if conf.cameras_from is not None:
        use_known_cameras(run.database, conf.cameras_from)


def _map(run: MethodRun, image_dir: Path, conf: RunConf) -> None:
    start = time.perf_counter()
    reconstruction = ReconstructionConf(
        mapper=conf.mapper,
        num_threads=conf.mapper_threads,
        seed=conf.seed,
        refine_intrinsics=conf.cameras_from is None,
    )
    try:
        run.model = reconstruct(run.database, image_dir, run.sparse, reconstruction)
    except ReconstructionError as error:
        run.error = str(error)
    run.seconds["map"] = time.perf_counter() - start


def link_images(source: Path, names: list[str], folder: Path) -> None:
    """Symbolic links folder/NAME -> source/NAME (NAME may hold sub-folders): a folder of chosen images, no copies."""
    for name in names:
        link = Path(folder) / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to((Path(source) / name).resolve())


def colmap_extract(
    database: Path, image_dir: Path, max_size: int | None, num_threads: int = -1, camera_mode: str = "auto"
) -> None:
    """COLMAP's SIFT extraction of every image of `image_dir` into a new database, as COLMAP runs it."""
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.max_image_size = max_size or -1
    extraction.num_threads = num_threads
    extract_colmap_sift(database, image_dir, list_images(image_dir), extraction, camera_mode)


def run_reference(
    image_dir: Path, output_dir: Path, conf: RunConf = RunConf()
) -> tuple[MethodRun, list[tuple[str, str]]]:
    """COLMAP's SIFT pipeline on `image_dir`; returns the run and the pairs it matched (for the others)."""
    run = _fresh_run(REFERENCE, output_dir)

    start = time.perf_counter()
    colmap_extract(run.database, image_dir, conf.max_size, conf.num_threads, conf.camera_mode)
    run.seconds["extract"] = time.perf_counter() - start
    _use_known_cameras(run, conf)

    with open_database(run.database) as database:
        pairs = select_pairs(conf.pairs, database)
    pairs_path = run.output / "pairs.txt"
    write_pairs_file(pairs, pairs_path)
    start = time.perf_counter()
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = conf.num_threads
    # Verified separately below, with the very call the plugin uses, to time the two stages apart.
    matching.skip_geometric_verification = True
    pairing = pycolmap.ImportedPairingOptions()
    pairing.match_list_path = pairs_path
    pycolmap.match_image_pairs(run.database, matching, pairing, device=pycolmap.Device.cpu)
    run.seconds["match"] = time.perf_counter() - start

    start = time.perf_counter()
    verify_pairs(run.database, pairs)
    run.seconds["verify"] = time.perf_counter() - start

    _map(run, image_dir, conf)
    return run, pairs


def run_plugin(
    method: str, image_dir: Path, output_dir: Path, pairs: list[tuple[str, str]], conf: RunConf = RunConf()
) -> MethodRun:
    """The plugin pipeline with extraction `method` and its default matcher on the given pairs."""
    run = _fresh_run(method, output_dir)
    features, matches = run.output / "features.h5", run.output / "matches.h5"
    extraction = extract_features(
        image_dir,
        run.database,
        features,
        ExtractionConf(
            method=method, max_size=conf.max_size, max_keypoints=conf.max_keypoints, camera_mode=conf.camera_mode
        ),
    )
    run.seconds["extract"] = extraction.seconds
    _use_known_cameras(run, conf)
    matching = match_features(run.database, features, matches, pairs, MatchingConf())
    run.seconds["match"] = matching.seconds_match
    run.seconds["verify"] = matching.seconds_verify
    _map(run, image_dir, conf)
    return run
