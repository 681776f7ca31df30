"""Reconstruct a scene with COLMAP SIFT (pycolmap) and read its tracks.

SIFT features, exhaustive matching with geometric verification, then incremental mapping. A
two-image scene skips the mapping, which cannot succeed on two images (see `reconstruct`):
its tracks are the matches COLMAP verified with a two-view geometry.

A reconstruction is a COLMAP database (keypoints with their affine shape: the track patches
need each keypoint's scale and orientation, which the sparse model does not keep) plus the
sparse models `sparse/<k>/`. One that already exists is reused, looked up in this order:
  1. `<scene>/database.db` + `<scene>/sparse/` beside the images (brought by the user);
  2. `<sfm_dir>/<scene name>/`, our cache (or the user's reconstructions in the same layout).
Otherwise the scene is reconstructed into `<sfm_dir>/<scene name>.tmp/`, which is renamed only
once mapping has finished, so an interrupted run never leaves a half-made cache behind.
"""

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pycolmap

from colmap_plugin.sift import extract_colmap_sift

from .scenes import PAIR_SEPARATOR, Scene

logger = logging.getLogger(__name__)

SFM_CONF_FILE = "sfm_conf.json"
# Two-view geometries that COLMAP verified (all but undefined, degenerate and watermark).
VERIFIED_CONFIGS = {
    pycolmap.TwoViewGeometryConfiguration.CALIBRATED,
    pycolmap.TwoViewGeometryConfiguration.CALIBRATED_RIG,
    pycolmap.TwoViewGeometryConfiguration.UNCALIBRATED,
    pycolmap.TwoViewGeometryConfiguration.PLANAR,
    pycolmap.TwoViewGeometryConfiguration.PANORAMIC,
    pycolmap.TwoViewGeometryConfiguration.PLANAR_OR_PANORAMIC,
    pycolmap.TwoViewGeometryConfiguration.MULTIPLE,
}


@dataclass(frozen=True)
class SfmConf:
    max_image_size: int = 1600  # SIFT runs on images downscaled to this; keypoints come back in full resolution
    max_num_features: int = 8192
    num_threads: int = -1  # extraction and matching (their results do not depend on it); -1: all cores
    # Fixed RANSAC seeds (verification and mapping) and a single-threaded mapper: with more threads the
    # model changed from build to build (lund registered 16 of 29 images in one build and 25 in the next).
    random_seed: int = 0
    mapper_threads: int = 1
    # Initial pair: COLMAP's defaults (16 degrees, 0.95) reject forward motion. Measured: on the
    # street sequence `lund` they map 2 of 29 images, these 23; the other scenes map as before.
    init_min_tri_angle: float = 8.0
    init_max_forward_motion: float = 1.0
    # Keep a separate model from 3 images up (COLMAP: 10): its tracks are as good as any.
    min_model_size: int = 3


@dataclass(frozen=True)
class Reconstruction:
    database: Path
    models: tuple[Path, ...]  # sparse model folders
    reused: bool  # True when it came from an earlier run or from the user


@dataclass
class SceneTracks:
    """The keypoints of a scene's registered images and the 3D tracks through them (for a pair
    without a model: its verified matches, as two-view tracks with ids -1).

    Only tracks of one model per image are kept: COLMAP may register an image in two models
    (a small model that failed to merge), which would make two tracks of one physical point.
    Models are taken largest first and a model sharing an image with a taken one is dropped.
    """

    image_names: list[str]  # (I,) registered images
    keypoints: list[np.ndarray]  # I x (K_i, 6) float32: COLMAP x, y (corner origin), a11, a12, a21, a22
    keypoint_track: list[np.ndarray]  # I x (K_i,) int64: index of the keypoint's track, -1 if none
    obs_image: np.ndarray  # (O,) int64 index into image_names, observations sorted by track
    obs_keypoint: np.ndarray  # (O,) int64 keypoint index in its image (= COLMAP point2D_idx)
    track_offsets: np.ndarray  # (T + 1,) int64: track t owns observations [offsets[t], offsets[t+1])
    track_point3D_id: np.ndarray  # (T,) int64 COLMAP point3D_id within its model
    track_model: np.ndarray  # (T,) int64 index of the model in Reconstruction.models
    num_images: int  # images in the database, registered or not
    source: str  # "sfm": tracks of the sparse models; "two_view": verified matches of a pair (ids -1)

    @property
    def num_tracks(self) -> int:
        return len(self.track_point3D_id)


def _model_dirs(sparse: Path) -> list[Path]:
    if not sparse.is_dir():
        return []
    if any((sparse / f"cameras.{ext}").exists() for ext in ("bin", "txt")):
        return [sparse]
    return sorted(
        (p for p in sparse.iterdir() if p.is_dir() and any(p.glob("cameras.*"))),
        key=lambda p: (len(p.name), p.name),
    )


def _settings(conf: dict) -> dict:
    """The settings that change a reconstruction: all but the thread count."""
    return {k: v for k, v in conf.items() if k != "num_threads"}


def _existing(folder: Path, conf: SfmConf | None) -> Reconstruction | None:
    """The reconstruction in `folder`, or None if absent or made with another `conf`."""
    database = folder / "database.db"
    if not database.exists() or not (folder / "sparse").is_dir():
        return None
    conf_file = folder / SFM_CONF_FILE
    if conf is not None and conf_file.exists():
        if _settings(json.loads(conf_file.read_text())) != _settings(asdict(conf)):
            return None  # our own cache, but from other settings
    return Reconstruction(database, tuple(_model_dirs(folder / "sparse")), reused=True)


def reconstruct(scene: Scene, sfm_dir: Path, conf: SfmConf) -> Reconstruction:
    """Find or build the SIFT reconstruction of `scene` (see the module docstring)."""
    # A folder of pairs holds many scenes: a reconstruction beside it cannot be one pair's.
    given = None if PAIR_SEPARATOR in scene.name else _existing(scene.root, conf=None)
    if given is not None:
        return given
    cached = _existing(sfm_dir / scene.name, conf)
    if cached is not None:
        return cached

    work = sfm_dir / f"{scene.name}.tmp"
    shutil.rmtree(work, ignore_errors=True)
    (work / "sparse").mkdir(parents=True)
    database = work / "database.db"
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.max_image_size = conf.max_image_size
    extraction.num_threads = conf.num_threads
    extraction.sift.max_num_features = conf.max_num_features
    extract_colmap_sift(database, scene.image_dir, list(scene.image_names), extraction)  # in name order
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = conf.num_threads
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = conf.random_seed
    pycolmap.match_exhaustive(
        database, matching_options=matching, verification_options=verification, device=pycolmap.Device.cpu
    )
    # COLMAP's mapper cannot map two images: it triangulates its initial pair ignoring tracks
    # seen by only two images, which are all tracks of a pair (load_tracks uses the matches).
    if len(scene.image_names) > 2:
        mapping = pycolmap.IncrementalPipelineOptions()
        mapping.num_threads = conf.mapper_threads
        mapping.random_seed = conf.random_seed
        mapping.extract_colors = False
        mapping.min_model_size = conf.min_model_size
        mapping.mapper.init_min_tri_angle = conf.init_min_tri_angle
        mapping.mapper.init_max_forward_motion = conf.init_max_forward_motion
        pycolmap.incremental_mapping(database, scene.image_dir, work / "sparse", mapping)
    (work / SFM_CONF_FILE).write_text(json.dumps(asdict(conf)))

    final = sfm_dir / scene.name
    shutil.rmtree(final, ignore_errors=True)
    work.rename(final)
    return Reconstruction(final / "database.db", tuple(_model_dirs(final / "sparse")), reused=False)


class _Collector:
    """Accumulates images and tracks, then packs them into a SceneTracks."""

    def __init__(self, database: pycolmap.Database):
        self.database = database
        self.db_ids = {image.name: image.image_id for image in database.read_all_images()}
        self.image_names: list[str] = []
        self.keypoints: list[np.ndarray] = []
        # Per track: (model, point3D_id, [(image index, keypoint index), ...]).
        self.tracks: list[tuple[int, int, list[tuple[int, int]]]] = []

    def add_image(self, name: str) -> int:
        kps = self.database.read_keypoints(self.db_ids[name])
        if kps.shape[1] != 6:
            raise ValueError(f"keypoints of {name} have no affine shape ({kps.shape[1]} columns)")
        self.image_names.append(name)
        self.keypoints.append(kps.astype(np.float32))
        return len(self.image_names) - 1

    def add_track(self, model: int, point3D_id: int, elements: list[tuple[int, int]]) -> None:
        if len({i for i, _ in elements}) >= 2:  # seen from two different views
            self.tracks.append((model, point3D_id, elements))

    def finish(self, source: str) -> SceneTracks:
        obs = np.array(
            [(t, i, k) for t, (_, _, elements) in enumerate(self.tracks) for i, k in elements], np.int64
        ).reshape(-1, 3)
        keypoint_track = []
        for i, kps in enumerate(self.keypoints):
            track = np.full(len(kps), -1, np.int64)
            in_image = obs[:, 1] == i
            track[obs[in_image, 2]] = obs[in_image, 0]
            keypoint_track.append(track)
        counts = np.bincount(obs[:, 0], minlength=len(self.tracks))
        return SceneTracks(
            image_names=self.image_names,
            keypoints=self.keypoints,
            keypoint_track=keypoint_track,
            obs_image=obs[:, 1],
            obs_keypoint=obs[:, 2],
            track_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            track_point3D_id=np.array([p for _, p, _ in self.tracks], np.int64),
            track_model=np.array([m for m, _, _ in self.tracks], np.int64),
            num_images=self.database.num_images(),
            source=source,
        )


def _collect_models(collector: _Collector, model_dirs: tuple[Path, ...]) -> None:
    models = [pycolmap.Reconstruction(path) for path in model_dirs]
    taken: set[str] = set()
    for m in sorted(range(len(models)), key=lambda m: -models[m].num_reg_images()):
        model = models[m]
        # An image can be registered without seeing any 3D point: it has nothing to label.
        observed = sorted(
            (i for i in model.reg_image_ids() if model.images[i].num_points3D), key=lambda i: model.images[i].name
        )
        names = {model.images[i].name for i in observed}
        if names & taken:
            logger.info("skipping model %s: it shares images with a larger one", model_dirs[m])
            continue
        taken |= names
        index: dict[int, int] = {}  # model image_id -> collector image index
        for image_id in observed:
            image = model.images[image_id]
            index[image_id] = i = collector.add_image(image.name)
            # The model's 2D points must be the database keypoints, in the same order.
            idx = np.asarray(image.get_observation_point2D_idxs(), np.int64)
            xy = np.array([p.xy for p in image.get_observation_points2D()], np.float32).reshape(-1, 2)
            kps = collector.keypoints[i]
            if image.num_points2D() != len(kps) or not np.allclose(xy, kps[idx, :2], atol=1e-2):
                raise ValueError(f"the model's points of {image.name} are not the database keypoints")
        for point3D_id, point in model.points3D.items():
            collector.add_track(m, point3D_id, [(index[e.image_id], e.point2D_idx) for e in point.track.elements])


def _collect_two_view(collector: _Collector) -> None:
    name1, name2 = sorted(collector.db_ids)
    geometry = collector.database.read_two_view_geometry(collector.db_ids[name1], collector.db_ids[name2])
    if geometry.config not in VERIFIED_CONFIGS or len(geometry.inlier_matches) == 0:
        return
    i1, i2 = collector.add_image(name1), collector.add_image(name2)
    for k1, k2 in geometry.inlier_matches:
        collector.add_track(-1, -1, [(i1, int(k1)), (i2, int(k2))])


def load_tracks(recon: Reconstruction) -> SceneTracks:
    """Read the keypoints and tracks of a reconstruction.

    Tracks come from the sparse models; a two-image scene without a model (COLMAP's mapper
    never maps one, see `reconstruct`) takes its geometrically verified matches instead.
    """
    database = pycolmap.Database.open(recon.database)
    try:
        collector = _Collector(database)
        if recon.models:
            _collect_models(collector, recon.models)
            return collector.finish("sfm")
        if len(collector.db_ids) == 2:
            _collect_two_view(collector)
            return collector.finish("two_view")
        return collector.finish("sfm")
    finally:
        database.close()
