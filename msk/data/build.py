"""Turn a folder of scenes into the HDF5 training set, one scene at a time.

Each scene is reconstructed (or its reconstruction reused, see `sfm.py`), then written to its
own shard `<work>/shards/<scene>.h5`; when all scenes are done the shards are copied into
DATASET.h5. Why shards: HDF5 has no journal, so a process killed while writing into a file can
leave that file unreadable. Therefore nothing is ever written in place:
  - a shard is written as `<scene>.h5.tmp`, marked `complete` last, flushed to disk and only
    then renamed; a rerun reuses every complete shard made with the same settings (`key`), so
    an interrupted build resumes and loses at most the scene it was working on;
  - DATASET.h5 is assembled as `DATASET.h5.tmp` and renamed over the old file at the end, so
    the file at DATASET.h5 is always a complete build, never a partial one.
Memory is bounded per scene, not by the number of scenes: images are read one at a time, and
a scene holds at most `max_points_per_scene * max_views_per_point` track patches (32 MB with
the defaults) before they are written. A scene that fails to reconstruct is recorded in its
shard as failed (rebuilding it would fail again); a scene that raises is reported and retried
by the next run.

Layout of DATASET.h5 (P patches, T tracks, I registered images, D detector samples per scene):
  attrs: conf (JSON), summary (JSON: per-scene counts, failures), patch_convention
  /scenes/<scene>/   attrs: split ('train' | 'val'), source, stats (JSON)
      images/    name (I,) str, width (I,), height (I,), num_keypoints (I,)
      tracks/    patches (P, PS, PS) uint8, sorted by track; track_offsets (T + 1,): track t owns
                 patches [offsets[t], offsets[t + 1]); point3D_id (P,), model (P,) (COLMAP model
                 index; both -1 in a two-view scene, whose tracks are verified matches),
                 image_idx (P,), keypoint_idx (P,) (= COLMAP point2D_idx), xy (P, 2)
                 (COLMAP corner origin, full resolution), scale (P,) (sigma, px),
                 orientation (P,) (radians, COLMAP's)
      detector/  patches (D, PS, PS) uint8 upright; label (D,) 1 = keep; kind (D,) (targets.py:
                 0 tracked, 1 untracked detection, 2 no detection); image_idx, keypoint_idx
                 (-1 for kind 2), xy (D, 2), scale (D,)
"""

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from colmap_plugin.images import read_image

from .patches import PatchConf, crop_patches, keypoint_orientation, keypoint_scale, oriented_lafs, upright_lafs
from .scenes import Scene, assign_split, discover_scenes
from .sfm import SceneTracks, SfmConf, load_tracks, reconstruct
from .targets import TRACKED, SampleConf, detector_samples, select_observations

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
PATCH_CONVENTION = (
    "patch side = window * keypoint scale; keypoint at patch index ((PS-1)/2, (PS-1)/2); "
    "track patches: patch x axis = keypoint orientation; detector patches: upright"
)


@dataclass(frozen=True)
class BuildConf:
    sfm: SfmConf = field(default_factory=SfmConf)
    patch: PatchConf = field(default_factory=PatchConf)
    sample: SampleConf = field(default_factory=SampleConf)
    val_fraction: float = 0.15
    seed: int = 0


def shard_key(conf: BuildConf) -> str:
    """Hash of what decides a shard's content: the layout version and the settings (not the
    split, which is decided when assembling, nor the thread count)."""
    content = asdict(conf) | {"format_version": FORMAT_VERSION}
    del content["val_fraction"], content["sfm"]["num_threads"]
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


# Chunks of a few patches: the datasets read them one at a time in random order. No gzip:
# it saves only ~17% on patches, and zlib is unsafe next to pycolmap (see __init__.py).
PATCH_CHUNK = 64


class _Appender:
    """Growable datasets in an HDF5 group, appended to in blocks."""

    def __init__(self, group: h5py.Group, specs: dict[str, tuple[tuple[int, ...], np.dtype]]):
        self.datasets = {
            name: group.create_dataset(
                name,
                (0, *shape),
                dtype,
                maxshape=(None, *shape),
                chunks=(PATCH_CHUNK, *shape),
            )
            for name, (shape, dtype) in specs.items()
        }

    def append(self, **arrays: np.ndarray) -> None:
        for name, array in arrays.items():
            ds = self.datasets[name]
            ds.resize(len(ds) + len(array), axis=0)
            ds[len(ds) - len(array) :] = array


def _write_scene(group: h5py.Group, scene: Scene, tracks: SceneTracks, conf: BuildConf) -> dict:
    """Crop and write one reconstructed scene's patches and detector samples; returns counts."""
    rng = np.random.default_rng([conf.seed, int.from_bytes(hashlib.sha256(scene.name.encode()).digest()[:8])])
    ps, window = conf.patch.patch_size, conf.patch.window
    keep_tracks, obs = select_observations(tracks, conf.sample, rng)
    obs_image, obs_kp = tracks.obs_image[obs], tracks.obs_keypoint[obs]
    obs_track = np.searchsorted(tracks.track_offsets, obs, side="right") - 1  # original track ids
    obs_kps = np.zeros((len(obs), 6), np.float32)
    track_patches = np.zeros((len(obs), ps, ps), np.uint8)

    detector = _Appender(
        group.create_group("detector"),
        {
            "patches": ((ps, ps), np.uint8),
            "label": ((), np.uint8),
            "kind": ((), np.uint8),
            "image_idx": ((), np.int32),
            "keypoint_idx": ((), np.int32),
            "xy": ((2,), np.float32),
            "scale": ((), np.float32),
        },
    )
    sizes = []
    for i, name in enumerate(tracks.image_names):
        image = read_image(scene.image_dir / name).gray  # COLMAP's reader: its keypoints' pixel grid
        sizes.append(image.shape[::-1])
        here = np.flatnonzero(obs_image == i)
        obs_kps[here] = tracks.keypoints[i][obs_kp[here]]
        track_patches[here] = crop_patches(image, oriented_lafs(obs_kps[here], window), ps)
        det = detector_samples(tracks.keypoints[i], tracks.keypoint_track[i], image.shape[::-1], conf.sample, rng)
        detector.append(
            patches=crop_patches(image, upright_lafs(det.xy, det.scale, window), ps),
            label=(det.kind == TRACKED).astype(np.uint8),
            kind=det.kind,
            image_idx=np.full(len(det.kind), i, np.int32),
            keypoint_idx=det.keypoint_idx.astype(np.int32),
            xy=det.xy,
            scale=det.scale,
        )

    images = group.create_group("images")
    images["name"] = np.array(tracks.image_names, dtype=h5py.string_dtype())
    images["width"] = np.array([w for w, _ in sizes], np.int32)
    images["height"] = np.array([h for _, h in sizes], np.int32)
    images["num_keypoints"] = np.array([len(k) for k in tracks.keypoints], np.int32)

    counts = np.bincount(np.searchsorted(keep_tracks, obs_track), minlength=len(keep_tracks))
    out = group.create_group("tracks")
    out.create_dataset("patches", data=track_patches, chunks=(min(PATCH_CHUNK, len(obs)), ps, ps))
    out["track_offsets"] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    out["point3D_id"] = tracks.track_point3D_id[obs_track]
    out["model"] = tracks.track_model[obs_track].astype(np.int16)
    out["image_idx"] = obs_image.astype(np.int32)
    out["keypoint_idx"] = obs_kp.astype(np.int32)
    out["xy"] = obs_kps[:, :2]
    out["scale"] = keypoint_scale(obs_kps).astype(np.float32)
    out["orientation"] = keypoint_orientation(obs_kps).astype(np.float32)
    return {
        "num_tracks": len(keep_tracks),
        "num_patches": len(obs),
        "num_detector": len(detector.datasets["label"]),
        "num_detector_positive": int(detector.datasets["label"][:].sum()),
    }


def build_scene(scene: Scene, shard: Path, sfm_dir: Path, conf: BuildConf) -> None:
    """Reconstruct `scene` and write its complete shard at `shard` (atomically)."""
    start = time.perf_counter()
    recon = reconstruct(scene, sfm_dir, conf.sfm)
    sfm_seconds = time.perf_counter() - start
    tracks = load_tracks(recon)
    stats = {
        "num_images": len(scene.image_names),
        "num_registered": len(tracks.image_names),
        "num_models": len(recon.models),
        "tracks_from": tracks.source,
        "num_points3D": tracks.num_tracks,
        "reused_reconstruction": recon.reused,
        "seconds_sfm": round(sfm_seconds, 1),
    }
    tmp = shard.with_name(shard.name + ".tmp")
    shard.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(tmp, "w") as f:
        group = f.create_group("scene")
        group.attrs["source"] = str(scene.root)
        if tracks.num_tracks == 0:
            group.attrs["failed"] = {
                "sfm": "COLMAP's incremental mapping made no model",
                "two_view": "COLMAP verified no two-view geometry between the pair",
            }[tracks.source]
        else:
            stats |= _write_scene(group, scene, tracks, conf)
        stats["seconds_total"] = round(time.perf_counter() - start, 1)
        group.attrs["stats"] = json.dumps(stats)
        f.attrs["key"] = shard_key(conf)
        f.attrs["complete"] = True
    _fsync(tmp)
    os.replace(tmp, shard)


def _shard_complete(shard: Path, key: str) -> bool:
    try:
        with h5py.File(shard, "r") as f:
            return bool(f.attrs.get("complete", False)) and f.attrs.get("key") == key
    except OSError:  # absent, or not a readable HDF5 file
        return False


def assemble(shards: dict[str, Path], output: Path, conf: BuildConf, errors: dict[str, str]) -> dict:
    """Copy the complete shards {scene: path} into `output` (atomically); returns the summary."""
    summary: dict = {"scenes": {}, "failed": dict(errors)}
    tmp = output.with_name(output.name + ".tmp")
    output.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(tmp, "w") as out:
        out.attrs["format_version"] = FORMAT_VERSION
        out.attrs["conf"] = json.dumps(asdict(conf))
        out.attrs["patch_convention"] = PATCH_CONVENTION
        scenes = out.create_group("scenes")
        for name, shard in shards.items():
            with h5py.File(shard, "r") as f:
                if "failed" in f["scene"].attrs:
                    summary["failed"][name] = f["scene"].attrs["failed"]
                    continue
                f.copy(f["scene"], scenes, name=name)
            scenes[name].attrs["split"] = assign_split(name, conf.val_fraction)
            summary["scenes"][name] = json.loads(scenes[name].attrs["stats"]) | {"split": scenes[name].attrs["split"]}
        out.attrs["summary"] = json.dumps(summary)
    _fsync(tmp)
    os.replace(tmp, output)
    return summary


def default_work_dir(output: Path) -> Path:
    return output.parent / f"{output.stem}_work"


def build_dataset(
    scenes_dir: Path,
    output: Path,
    conf: BuildConf = BuildConf(),
    work_dir: Path | None = None,
    only: list[str] | None = None,
) -> dict:
    """Build DATASET.h5 at `output` from every scene in `scenes_dir` (or the scenes named in `only`).

    Returns the summary stored in the file (per-scene counts and failures).
    """
    output = Path(output)
    work_dir = Path(work_dir) if work_dir else default_work_dir(output)
    scenes = discover_scenes(Path(scenes_dir))
    if only:
        missing = set(only) - {s.name for s in scenes}
        if missing:
            raise ValueError(f"no such scenes in {scenes_dir}: {sorted(missing)}")
        scenes = [s for s in scenes if s.name in only]
    key = shard_key(conf)
    shards: dict[str, Path] = {}
    errors: dict[str, str] = {}
    for scene in tqdm(scenes, desc="scenes", unit="scene"):
        shard = work_dir / "shards" / f"{scene.name}.h5"
        if not _shard_complete(shard, key):
            try:
                build_scene(scene, shard, work_dir / "sfm", conf)
            except Exception as e:  # one broken scene must not cost the others; reported and retried next run
                logger.exception("scene %s failed", scene.name)
                errors[scene.name] = f"{type(e).__name__}: {e}"
                continue
        shards[scene.name] = shard
    return assemble(shards, output, conf, errors)


def format_summary(summary: dict) -> str:
    """Totals and per-scene lines of a build summary, for the console."""
    ok = summary["scenes"]
    lines = [
        f"{name:40s} {s['split']:5s} images {s['num_registered']:3d}/{s['num_images']:<3d} "
        f"points3D {s['num_points3D']:6d} tracks {s['num_tracks']:5d} patches {s['num_patches']:6d} "
        f"detector {s['num_detector']:6d}"
        for name, s in ok.items()
    ]
    lines += [f"{name:40s} FAILED: {reason}" for name, reason in summary["failed"].items()]

    def total(key: str, split: str | None = None) -> int:
        return sum(s[key] for s in ok.values() if split in (None, s["split"]))

    for split in (None, "train", "val"):
        n = sum(1 for s in ok.values() if split in (None, s["split"]))
        lines.append(
            f"{split or 'total':5s}: {n} scenes, {total('num_registered', split)} registered images "
            f"(of {total('num_images', split)}), {total('num_points3D', split)} 3D points (>= 2 views), "
            f"{total('num_tracks', split)} tracks kept, {total('num_patches', split)} patches, "
            f"{total('num_detector', split)} detector samples"
        )
    lines.append(f"failed: {len(summary['failed'])} scenes")
    return "\n".join(lines)
