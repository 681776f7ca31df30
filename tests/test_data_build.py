"""End to end on real data: `berlin` (3 views) and two kusvod2 pairs, SIFT on images downscaled
to 800 px. One build (~15 s) is shared by the module; the resume tests reuse its reconstructions."""

import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pycolmap
import pytest
import torch
from kornia.feature import SIFTDescriptor

import msk.data.build as build_module
from colmap_plugin.datasets import datasets_root
from msk.data.build import BuildConf, build_dataset
from msk.data.dataset import DetectorSamples, TrackTriplets
from msk.data.patches import crop_patches, keypoint_orientation, keypoint_scale, oriented_lafs
from msk.data.sfm import SfmConf
from msk.data.targets import EMPTY, TRACKED, UNTRACKED, SampleConf
from msk.detector import DetectorConf
from msk.train.detector import DetectorTrainConf, train_detector
from msk.weights import load_detector

TRAIN = datasets_root() / "train"
PAIRS = ["box", "castle"]
SOURCES = [TRAIN / "berlin" / "images"]
SOURCES += [TRAIN / "kusvod2_pairs" / "images" / f"{p}{side}.jpg" for p in PAIRS for side in "AB"]
pytestmark = pytest.mark.skipif(
    not all(p.exists() for p in SOURCES), reason=f"training scenes not found under {TRAIN} (set MSK_DATASETS)"
)

# With val_fraction 0.5 the hash puts berlin and pairs:box in train, pairs:castle in val.
CONF = BuildConf(sfm=SfmConf(max_image_size=800), sample=SampleConf(max_points_per_scene=400), val_fraction=0.5)
SPLITS = {"berlin": "train", "pairs:box": "train", "pairs:castle": "val"}


def _make_scenes(root: Path) -> Path:
    """A scenes folder of links: berlin and a pairs folder holding two A/B pairs."""
    scenes = root / "scenes"
    (scenes / "pairs" / "images").mkdir(parents=True)
    (scenes / "berlin").symlink_to(TRAIN / "berlin")
    for source in SOURCES[1:]:
        (scenes / "pairs" / "images" / source.name).symlink_to(source)
    return scenes


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    scenes = _make_scenes(root)
    summary = build_dataset(scenes, root / "train.h5", CONF)
    return SimpleNamespace(scenes=scenes, output=root / "train.h5", work=root / "train_work", summary=summary)


def _read_scene(path: Path, name: str) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        g = f["scenes"][name]
        return {f"{k}/{d}": g[k][d][:] for k in ("tracks", "detector", "images") for d in g[k]}


def _as_bytes(patch: torch.Tensor) -> bytes:
    """A dataset's unaugmented (1, PS, PS) patch as the uint8 bytes stored in the file."""
    return (patch[0] * 255).round().to(torch.uint8).numpy().tobytes()


def test_every_scene_is_built(built):
    assert built.summary["failed"] == {}
    scenes = built.summary["scenes"]
    assert set(scenes) == set(SPLITS)
    assert scenes["berlin"]["num_registered"] == 3
    assert scenes["berlin"]["num_tracks"] == 400 < scenes["berlin"]["num_points3D"]  # capped
    for pair in ("pairs:box", "pairs:castle"):
        assert scenes[pair]["num_registered"] == 2 and scenes[pair]["tracks_from"] == "two_view"
    with h5py.File(built.output, "r") as f:
        for name, stats in scenes.items():
            tracks = f["scenes"][name]["tracks"]
            assert len(tracks["patches"]) == stats["num_patches"] == tracks["track_offsets"][-1]
            assert len(tracks["track_offsets"]) == stats["num_tracks"] + 1
            assert np.diff(tracks["track_offsets"][:]).min() >= 2


@pytest.mark.parametrize("scene", list(SPLITS))
def test_patches_of_a_track_show_the_same_spot(built, scene):
    """SIFT descriptors of two views of one track are far closer than those of different tracks."""
    data = _read_scene(built.output, scene)
    offsets = data["tracks/track_offsets"]
    patches = torch.from_numpy(data["tracks/patches"]).float()[:, None] / 255
    with torch.no_grad():
        desc = SIFTDescriptor(patches.shape[-1], rootsift=True)(patches)
    first, second = desc[offsets[:-1]], desc[offsets[:-1] + 1]
    same = (first - second).norm(dim=1).median()
    other = (first - second.roll(1, dims=0)).norm(dim=1).median()
    assert same < 0.6 * other
    # Each track's first view finds its second view among all tracks' second views.
    nearest = torch.cdist(first, second).argmin(dim=1)
    assert (nearest == torch.arange(len(first))).float().mean() > 0.8


def _database(built, scene: str) -> tuple[pycolmap.Database, dict[str, int]]:
    db = pycolmap.Database.open(built.work / "sfm" / scene / "database.db")
    return db, {image.name: image.image_id for image in db.read_all_images()}


@pytest.mark.parametrize("scene", ["berlin", "pairs:castle"])
def test_patches_trace_back_to_colmap(built, scene):
    data = _read_scene(built.output, scene)
    names = [n.decode() for n in data["images/name"]]
    db, ids = _database(built, scene)
    kps = {name: db.read_keypoints(ids[name]) for name in names}
    offsets = data["tracks/track_offsets"]
    if scene == "berlin":
        model = pycolmap.Reconstruction(built.work / "sfm" / scene / "sparse" / "0")
        model_ids = {model.images[i].name: i for i in model.reg_image_ids()}
    else:
        geometry = db.read_two_view_geometry(ids[names[0]], ids[names[1]])
        inliers = {tuple(m) for m in geometry.inlier_matches.tolist()}
    db.close()

    for t in range(0, len(offsets) - 1, 7):
        rows = range(offsets[t], offsets[t + 1])
        keypoints = [(names[data["tracks/image_idx"][r]], data["tracks/keypoint_idx"][r]) for r in rows]
        for r, (name, k) in zip(rows, keypoints):
            kp = kps[name][k][None]
            np.testing.assert_allclose(data["tracks/xy"][r], kp[0, :2])
            np.testing.assert_allclose(data["tracks/scale"][r], keypoint_scale(kp)[0], rtol=1e-5)
            np.testing.assert_allclose(data["tracks/orientation"][r], keypoint_orientation(kp)[0], atol=1e-5)
        if scene == "berlin":
            point = model.points3D[int(data["tracks/point3D_id"][offsets[t]])]
            elements = {(e.image_id, e.point2D_idx) for e in point.track.elements}
            assert {(model_ids[name], k) for name, k in keypoints} <= elements
        else:
            assert (keypoints[0][1], keypoints[1][1]) in inliers

    # The stored patches are the crops of the original images around the keypoints.
    for i, name in enumerate(names):
        image = pycolmap.Bitmap.read(built.scenes / scene.split(":")[0] / "images" / name, False).to_array()
        rows = np.flatnonzero(data["tracks/image_idx"] == i)[::37]
        kp = kps[name][data["tracks/keypoint_idx"][rows]]
        np.testing.assert_array_equal(crop_patches(image, oriented_lafs(kp, 12.0), 32), data["tracks/patches"][rows])


def test_detector_samples_are_labelled_by_sfm(built):
    data = _read_scene(built.output, "berlin")
    names = [n.decode() for n in data["images/name"]]
    db, ids = _database(built, "berlin")
    model = pycolmap.Reconstruction(built.work / "sfm" / "berlin" / "sparse" / "0")
    model_ids = {model.images[i].name: i for i in model.reg_image_ids()}
    kind, image_idx, kp_idx = data["detector/kind"], data["detector/image_idx"], data["detector/keypoint_idx"]
    np.testing.assert_array_equal(data["detector/label"], kind == TRACKED)
    for i, name in enumerate(names):
        kps = db.read_keypoints(ids[name])
        tracked = set(model.images[model_ids[name]].get_observation_point2D_idxs())
        here = image_idx == i
        assert {TRACKED, UNTRACKED, EMPTY} <= set(kind[here].tolist())
        assert all(k in tracked for k in kp_idx[here & (kind == TRACKED)])
        assert not any(k in tracked for k in kp_idx[here & (kind == UNTRACKED)])
        empty = here & (kind == EMPTY)
        assert (kp_idx[empty] == -1).all()
        # No SIFT keypoint at the spot and scale of an empty sample.
        xy, scale = data["detector/xy"][empty], data["detector/scale"][empty]
        dist = np.linalg.norm(xy[:, None] - kps[None, :, :2], axis=-1)
        ratio = scale[:, None] / keypoint_scale(kps)[None]
        assert not ((dist < np.maximum(scale[:, None], keypoint_scale(kps)[None])) & (ratio < 2) & (ratio > 0.5)).any()
    db.close()


def test_split_never_mixes_scenes(built):
    with h5py.File(built.output, "r") as f:
        assert {name: g.attrs["split"] for name, g in f["scenes"].items()} == SPLITS
    raw = {name: _read_scene(built.output, name) for name in SPLITS}
    for split in ("train", "val"):
        allowed_patches = {p.tobytes() for n in SPLITS if SPLITS[n] == split for p in raw[n]["tracks/patches"]}
        triplets = TrackTriplets(built.output, split, augment_conf=None)
        assert {SPLITS[triplets.scenes[s]] for s in range(len(triplets.scenes))} == {split}
        assert len(triplets) == sum(len(raw[n]["tracks/track_offsets"]) - 1 for n in SPLITS if SPLITS[n] == split)
        for i in torch.randint(len(triplets), (50,)).tolist():
            item = triplets[i]
            for key in ("anchor", "positive", "negative"):
                assert _as_bytes(item[key]) in allowed_patches
        detector = DetectorSamples(built.output, split, augment_conf=None)
        assert {SPLITS[s] for s in detector.scenes} == {split}
    train_images = {n.decode() for s in SPLITS if SPLITS[s] == "train" for n in raw[s]["images/name"]}
    val_images = {n.decode() for s in SPLITS if SPLITS[s] == "val" for n in raw[s]["images/name"]}
    assert not train_images & val_images


def test_triplets_pair_two_views_of_a_track_with_another_track(built):
    raw = _read_scene(built.output, "berlin")
    offsets, patches = raw["tracks/track_offsets"], raw["tracks/patches"]
    triplets = TrackTriplets(built.output, "train", augment_conf=None)
    berlin = triplets.scenes.index("berlin")
    start = int(triplets.cumulative[berlin - 1]) if berlin else 0
    for t in (0, 5, 123):
        item = triplets[start + t]
        assert (item["scene"], item["track"]) == (berlin, t)
        views = {p.tobytes() for p in patches[offsets[t] : offsets[t + 1]]}
        a, p, n = (_as_bytes(item[k]) for k in ("anchor", "positive", "negative"))
        assert a in views and p in views and a != p
        assert n not in views


def test_augmentation_changes_patches_but_keeps_them_recognisable(built):
    plain = TrackTriplets(built.output, "train", augment_conf=None)
    augmented = TrackTriplets(built.output, "train")
    torch.manual_seed(0)
    x, y, y_again = plain[3]["anchor"], augmented[3]["anchor"], augmented[3]["anchor"]
    assert y.shape == x.shape == (1, 32, 32) and 0 <= y.min() and y.max() <= 1
    assert not torch.equal(x, y) and not torch.equal(y, y_again)  # on the fly, random
    # Anchors of the same track stay strongly correlated with the unaugmented patch.
    correlation = torch.corrcoef(torch.stack([x.flatten(), y.flatten()]))[0, 1]
    assert correlation > 0.5
    sample = DetectorSamples(built.output, "train")[0]
    assert sample["patch"].shape == (1, 32, 32) and sample["label"] in (0.0, 1.0)


def _copy_reconstructions(built, work: Path, scenes: list[str]) -> None:
    for scene in scenes:
        shutil.copytree(built.work / "sfm" / scene, work / "sfm" / scene)


def test_interrupted_build_resumes(built, tmp_path, monkeypatch):
    work, output = tmp_path / "work", tmp_path / "train.h5"
    _copy_reconstructions(built, work, list(SPLITS))
    real_build_scene = build_module.build_scene
    calls = []

    def interrupted_on_second_scene(scene, *args):
        calls.append(scene.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_build_scene(scene, *args)

    monkeypatch.setattr(build_module, "build_scene", interrupted_on_second_scene)
    with pytest.raises(KeyboardInterrupt):
        build_dataset(built.scenes, output, CONF, work_dir=work)
    assert not output.exists()  # never a partial dataset
    assert (work / "shards" / "berlin.h5").exists()
    # Leftovers of a crash: a half-written shard and a torn one.
    (work / "shards" / "pairs:box.h5.tmp").write_bytes(b"\x89HDF\r\n half a shard")
    (work / "shards" / "pairs:castle.h5").write_bytes(b"not an HDF5 file")

    calls.clear()

    def recorded(scene, *args):
        calls.append(scene.name)
        real_build_scene(scene, *args)

    monkeypatch.setattr(build_module, "build_scene", recorded)
    summary = build_dataset(built.scenes, output, CONF, work_dir=work)
    assert calls == ["pairs:box", "pairs:castle"]  # berlin resumed from its shard
    assert summary["failed"] == {} and set(summary["scenes"]) == set(SPLITS)
    for name in SPLITS:  # same reconstructions and seed: the same data as an uninterrupted build
        resumed, reference = _read_scene(output, name), _read_scene(built.output, name)
        assert resumed.keys() == reference.keys()
        for key in reference:
            np.testing.assert_array_equal(resumed[key], reference[key], err_msg=f"{name} {key}")


def test_a_rebuild_from_scratch_gives_the_same_data(built, tmp_path):
    """Reconstructed again, on one thread instead of all cores: image numbering, verification and
    mapping do not depend on thread timing, so the shipped weights can be retrained from a new build."""
    one_thread = replace(CONF, sfm=replace(CONF.sfm, num_threads=1))
    summary = build_dataset(built.scenes, tmp_path / "again.h5", one_thread, only=["berlin"])
    assert not summary["scenes"]["berlin"]["reused_reconstruction"]
    rebuilt, reference = _read_scene(tmp_path / "again.h5", "berlin"), _read_scene(built.output, "berlin")
    assert rebuilt.keys() == reference.keys()
    for key in reference:
        np.testing.assert_array_equal(rebuilt[key], reference[key], err_msg=key)


def test_killed_build_keeps_the_previous_dataset_and_resumes(built, tmp_path):
    """SIGKILL in the middle of a scene's reconstruction: the old DATASET.h5 is untouched, the
    next run builds only the missing scenes."""
    work, output = tmp_path / "work", tmp_path / "train.h5"
    _copy_reconstructions(built, work, ["berlin"])  # the pairs must be reconstructed: slow enough to be killed
    shutil.copy(built.output, output)
    previous = output.read_bytes()
    command = [sys.executable, "-m", "msk.data.cli", "build", str(built.scenes), "--output", str(output)]
    command += ["--work-dir", str(work), "--max-image-size", "800", "--max-points", "400", "--val-fraction", "0.5"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (work / "shards" / "berlin.h5").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the build ended before it could be killed"
    assert output.read_bytes() == previous
    berlin_shard = (work / "shards" / "berlin.h5").stat().st_mtime_ns

    summary = build_dataset(built.scenes, output, CONF, work_dir=work)
    assert (work / "shards" / "berlin.h5").stat().st_mtime_ns == berlin_shard
    assert set(summary["scenes"]) == set(SPLITS)
    with h5py.File(output, "r") as f:
        assert set(f["scenes"]) == set(SPLITS)


def test_an_existing_reconstruction_is_reused(built, tmp_path):
    """A scene that brings its own database.db and sparse/ is not reconstructed again."""
    scene = tmp_path / "scenes" / "berlin_done"
    scene.mkdir(parents=True)
    (scene / "images").symlink_to(TRAIN / "berlin" / "images")
    shutil.copy(built.work / "sfm" / "berlin" / "database.db", scene / "database.db")
    shutil.copytree(built.work / "sfm" / "berlin" / "sparse", scene / "sparse")
    summary = build_dataset(tmp_path / "scenes", tmp_path / "reused.h5", CONF)
    stats, reference = summary["scenes"]["berlin_done"], built.summary["scenes"]["berlin"]
    assert stats["reused_reconstruction"] and not reference["reused_reconstruction"]
    assert not (tmp_path / "reused_work" / "sfm").exists()
    assert (stats["num_registered"], stats["num_points3D"]) == (reference["num_registered"], reference["num_points3D"])


def test_show_writes_a_png(built, tmp_path):
    png = tmp_path / "look.png"
    # In a fresh process: the CLI as users run it.
    subprocess.run([sys.executable, "-m", "msk.data.cli", "show", str(built.output), "--output", str(png)], check=True)
    header = png.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
    assert width > 400 and height > 800


@pytest.fixture
def torch_settings():
    """Training sets PyTorch's thread count and deterministic algorithms for the process: put them back."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def test_detector_training_is_reproducible_and_records_its_scale_space(built, tmp_path, torch_settings):
    """The same seed trains the same weights, bit for bit (as the shipped ones are reproduced); a finer
    scale-space (`msk train detector --sigma0 --num-octaves`) is kept in the weights, so extraction uses it."""
    conf = DetectorTrainConf(steps=3, batch_size=2, repeatability_pairs=2)  # two threads, as shipped
    finer = DetectorConf(sigma0=1.27, num_octaves=5)
    paths = [tmp_path / f"{name}.pt" for name in ("first", "again", "finer")]
    for path, model_conf in zip(paths, [DetectorConf(), DetectorConf(), finer]):
        train_detector(built.output, built.scenes, path, conf, model_conf)
    first, again, other = (torch.load(path, weights_only=True)["state_dict"] for path in paths)
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not all(torch.equal(first[key], other[key]) for key in first)  # same shapes, other targets
    assert load_detector(paths[0]).conf == DetectorConf()
    assert load_detector(paths[2]).conf == finer
