"""The shipped MSK weights through the plugin: a warped image pair is matched correctly."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import msk.descriptor
import msk.match_decision
import msk.plugin
from colmap_plugin.features import Features, create_extractor
from colmap_plugin.images import read_image
from colmap_plugin.keypoints import affine_keypoints, colmap_to_pixel, pixel_to_colmap
from colmap_plugin.matchers import create_matcher, nearest_both_ways
from colmap_plugin.store import FeatureStore, StoreMismatchError
from msk.descriptor import describe_keypoints, native_bfloat16
from msk.detector import DetectionConf, detect
from msk.refinement import converged_duplicates, refine_blobs
from msk.visualize import show_keypoints, synthetic_scene
from msk.weights import (
    DESCRIPTOR_WEIGHTS,
    DETECTOR_WEIGHTS,
    MATCH_DECISION_WEIGHTS,
    load_descriptor,
    load_detector,
    weights_fingerprint,
)
from reconstruction_eval.homography_metrics import warp_image

# Rotation by 15 degrees, zoom 0.8 and a shift: a viewpoint change SfM photos often show.
ANGLE, ZOOM = np.deg2rad(15), 0.8
HOMOGRAPHY = np.array(
    [
        [ZOOM * np.cos(ANGLE), -ZOOM * np.sin(ANGLE), 150.0],
        [ZOOM * np.sin(ANGLE), ZOOM * np.cos(ANGLE), -60.0],
        [0, 0, 1],
    ]
)


@pytest.fixture(scope="module")
def warped_pair(datasets):
    image = read_image(datasets / "eval" / "Herz-Jesus-P8" / "images" / "0003.jpg", max_size=768).gray
    return image, warp_image(image, HOMOGRAPHY)


@pytest.mark.parametrize("method", ["sift+msk", "msk"])
def test_learned_matches_of_a_warped_pair_are_mostly_correct(warped_pair, method):
    image, warped = warped_pair
    extractor = create_extractor(method, max_keypoints=2048)
    features0, features1 = extractor.extract(image), extractor.extract(warped)
    matches, probability = create_matcher("learned").match(features0, features1)
    assert np.all((probability > 0) & (probability <= 1))
    xy0 = colmap_to_pixel(features0.keypoints[matches[:, 0]])
    xy1 = colmap_to_pixel(features1.keypoints[matches[:, 1]])
    projected = np.c_[xy0, np.ones(len(xy0))] @ HOMOGRAPHY.T
    error = np.linalg.norm(projected[:, :2] / projected[:, 2:] - xy1, axis=1)
    correct = int(np.sum(error < 3))
    assert correct >= 150, (correct, len(matches))
    assert correct / len(matches) > 0.7, (correct, len(matches))


def test_keypoint_picture_is_written(datasets, tmp_path):
    count = show_keypoints(datasets / "eval" / "fountain-P11" / "images" / "0000.jpg", tmp_path / "look.jpg", 512, 300)
    assert count == 300 and (tmp_path / "look.jpg").stat().st_size > 10_000


def test_detected_scales_grow_with_the_blobs_of_the_synthetic_scene():
    image, blobs = synthetic_scene()
    with torch.inference_mode():
        found = detect(load_detector(), torch.from_numpy(image).float().div(255)[None, None])
    xy, sigma = found["xy"].numpy(), found["sigma"].numpy()
    for row in (blobs[:5], blobs[5:10], blobs[10:]):
        # The strongest keypoint on each blob's centre, blobs from small to large.
        scales = []
        for x, y, blob_sigma in row:
            near = np.flatnonzero(np.hypot(xy[:, 0] - x, xy[:, 1] - y) < max(2.0, blob_sigma / 4))
            assert len(near), f"no keypoint on the blob of sigma {blob_sigma} at ({x:.0f}, {y:.0f})"
            scales.append(sigma[near[0]])
        assert np.all(np.diff(scales) > 0), scales


def test_a_feature_store_made_with_other_weights_is_refused(tmp_path):
    identity = create_extractor("msk").identity()
    assert identity["weights"] == weights_fingerprint(DETECTOR_WEIGHTS, DESCRIPTOR_WEIGHTS)
    with FeatureStore(tmp_path / "features.h5", identity):
        pass
    retrained = tmp_path / "detector.pt"
    retrained.write_bytes(DETECTOR_WEIGHTS.read_bytes() + b"\0")
    other = {**identity, "weights": weights_fingerprint(retrained, DESCRIPTOR_WEIGHTS)}
    with pytest.raises(StoreMismatchError):
        FeatureStore(tmp_path / "features.h5", other)
    assert create_matcher("learned").identity()["weights"] == weights_fingerprint(MATCH_DECISION_WEIGHTS)


def test_bfloat16_descriptors_agree_with_float32_ones(warped_pair):
    image, _ = warped_pair
    found = create_extractor("sift", max_keypoints=512).extract(image)
    keypoints = affine_keypoints(found.keypoints, found.scales, found.orientations)
    model = load_descriptor()
    exact = describe_keypoints(model, image, keypoints)
    fast = describe_keypoints(model, image, keypoints, bfloat16=True)
    assert fast.dtype == torch.float32 and fast.norm(dim=1).sub(1).abs().max() < 1e-5
    assert (exact * fast).sum(dim=1).min() > 0.999


def test_descriptor_precision_is_resolved_and_recorded():
    assert create_extractor("msk").identity()["bfloat16"] == native_bfloat16()
    assert create_extractor("sift+msk", bfloat16=False).identity()["bfloat16"] is False
    assert create_matcher("learned", bfloat16=False).identity()["bfloat16"] is False


@pytest.mark.parametrize("bfloat16", [False, True])
def test_learned_matcher_shortlists_in_its_precision(monkeypatch, bfloat16):
    searches = []

    def recorded(desc0, desc1, search):
        searches.append(search)
        return nearest_both_ways(desc0, desc1, search)

    monkeypatch.setattr(msk.match_decision, "nearest_both_ways", recorded)
    rng = np.random.default_rng(0)
    features = Features(
        keypoints=rng.uniform(0, 100, (16, 2)).astype(np.float32),
        scales=np.ones(16, np.float32),
        orientations=np.zeros(16, np.float32),
        scores=np.ones(16, np.float32),
        descriptors=rng.standard_normal((16, 128)).astype(np.float32),
    )
    create_matcher("learned", bfloat16=bfloat16).match(features, features)
    assert searches == ["bfloat16" if bfloat16 else "float32"]


@pytest.mark.skipif(not native_bfloat16(), reason="without native bfloat16 the check is false anyway")
def test_torch_held_to_avx2_runs_as_a_cpu_without_bfloat16():
    # How the benchmarks time a laptop's CPU on one with AVX-512: torch reads the variable when imported.
    check = "from msk.descriptor import native_bfloat16; print(native_bfloat16())"
    environment = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2"}
    result = subprocess.run([sys.executable, "-c", check], env=environment, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("grey", [0, 200, 255])
def test_a_blank_image_has_no_msk_keypoints(grey):
    """The detector's zero padding makes the corners of a blank image look like corners; their patches
    show a single grey level, nothing to describe or match, so they are dropped."""
    image = np.full((480, 640), grey, np.uint8)
    assert len(create_extractor("msk").extract(image)) == 0
    detections = detect(load_detector(), torch.from_numpy(image).float().div(255)[None, None])
    assert grey == 0 or len(detections["xy"]) > 0  # what the test guards against


def test_keypoints_are_described_the_same_in_chunks_of_any_size(warped_pair, monkeypatch):
    image, _ = warped_pair
    extractor = create_extractor("msk", max_keypoints=2048)
    monkeypatch.setattr(msk.plugin, "KEYPOINT_CHUNK", 4096)
    monkeypatch.setattr(msk.descriptor, "DESCRIBE_BATCH", 4096)
    whole = extractor.extract(image)
    monkeypatch.setattr(msk.plugin, "KEYPOINT_CHUNK", 300)  # 7 chunks, the last one partly filled
    monkeypatch.setattr(msk.descriptor, "DESCRIBE_BATCH", 128)
    chunked = extractor.extract(image)
    assert len(whole) == len(chunked) == 2048
    np.testing.assert_array_equal(chunked.scores, whole.scores)
    # The refinement's matrix product sums in an order that depends on the rows around: last-digit changes.
    for field in ("keypoints", "scales", "orientations"):
        np.testing.assert_allclose(getattr(chunked, field), getattr(whole, field), rtol=1e-6, atol=1e-5)
    # Descriptors are float16: a last-digit change may round to the neighbouring float16 (steps up to 4.9e-4).
    np.testing.assert_allclose(chunked.descriptors, whole.descriptors, atol=1e-3)


def test_no_two_keypoints_are_refined_onto_one_blob_and_the_budget_stays_full(warped_pair):
    image, _ = warped_pair
    features = create_extractor("msk", max_keypoints=2048).extract(image)
    assert len(features) == 2048
    assert not converged_duplicates(features.keypoints, features.scales).any()
    # Without the duplicates dropped, some would be: the detections refine onto shared blobs.
    with torch.inference_mode():
        detections = detect(load_detector(), torch.from_numpy(image).float().div(255)[None, None], DetectionConf(2048))
    xy, sigma = refine_blobs(image, pixel_to_colmap(detections["xy"].numpy()), detections["sigma"].numpy())
    assert converged_duplicates(xy, sigma).sum() > 10


def test_second_orientations_fill_only_the_budget_that_detections_leave(warped_pair):
    image, _ = warped_pair
    single = create_extractor("msk", max_keypoints=8192, max_orientations=1).extract(image)
    assert len(single) < 8192  # a 768-pixel image: the detector leaves room in the budget
    both = create_extractor("msk", max_keypoints=8192).extract(image)
    assert len(single) < len(both) <= 8192

    # The added keypoints repeat detections (position, scale, score) with another orientation.
    def frames(features):
        return [
            (*xy, scale, score)
            for xy, scale, score in zip(features.keypoints.tolist(), features.scales, features.scores)
        ]

    assert set(frames(both)) == set(frames(single))
    orientations = {}
    for frame, orientation in zip(frames(both), both.orientations):
        orientations.setdefault(frame, []).append(orientation)
    pairs = np.array([angles for angles in orientations.values() if len(angles) == 2])
    assert len(pairs) == len(both) - len(single)
    turn = np.abs(np.angle(np.exp(1j * (pairs[:, 0] - pairs[:, 1]))))
    assert turn.min() > np.radians(10)  # another peak of the 10-degree histogram, not the same one

    # Where the detections fill the budget, every keypoint has one orientation.
    full = create_extractor("msk", max_keypoints=2048).extract(image)
    assert len(full) == 2048 and len(set(frames(full))) == 2048
    with pytest.raises(ValueError, match="max_orientations must be 1 or 2"):
        create_extractor("msk", max_orientations=3)
