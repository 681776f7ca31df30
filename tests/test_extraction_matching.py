"""Extraction and matching on a synthetic scene: results land in both stores and reruns resume."""

import hashlib
import shutil

import numpy as np
import pycolmap
import pytest
from test_database import random_features

from colmap_plugin.database import image_ids_by_name, import_images, open_database, write_features
from colmap_plugin.extraction import ExtractionConf, FeatureKindMismatchError, extract_features
from colmap_plugin.images import list_images
from colmap_plugin.matching import MatchingConf, match_features, verify_pairs
from colmap_plugin.pairs import select_pairs
from colmap_plugin.store import FeatureStore, MatchStore, StoreMismatchError
from reconstruction_eval.metrics import epipolar_errors


def database_snapshot(path) -> dict:
    """Everything extraction and matching write into a database, comparable with ==."""
    with open_database(path) as database:
        images = {image.name: image.image_id for image in database.read_all_images()}
        pair_ids, geometries = database.read_two_view_geometries()
        return {
            "cameras": database.num_cameras(),
            "keypoints": {name: database.read_keypoints(i).tobytes() for name, i in images.items()},
            "descriptors": {name: database.read_descriptors(i).data.tobytes() for name, i in images.items()},
            "matches": [matches.tobytes() for matches in database.read_all_matches()[1]],
            "geometries": {
                pair_id: (int(g.config), g.inlier_matches.tobytes()) for pair_id, g in zip(pair_ids, geometries)
            },
        }


def file_digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def images(tmp_path, synthetic_scene):
    folder = tmp_path / "images"
    shutil.copytree(synthetic_scene / "images", folder)
    return folder


def extract_and_match(images, output, method=ExtractionConf.method):
    conf = ExtractionConf(method=method, max_size=640)
    extraction = extract_features(images, output / "database.db", output / "features.h5", conf)
    with open_database(output / "database.db") as database:
        pairs = select_pairs("exhaustive", database)
    matching = match_features(output / "database.db", output / "features.h5", output / "matches.h5", pairs)
    return extraction, matching


@pytest.mark.parametrize("method", ["msk", "sift"])
def test_features_reach_database_and_store(images, tmp_path, method):
    extraction, matching = extract_and_match(images, tmp_path / "out", method)
    assert len(extraction.extracted) == 6 and not extraction.skipped
    assert matching.matched == 15 and matching.verified == 15 and matching.num_matches > 0
    with open_database(tmp_path / "out/database.db") as database, FeatureStore(tmp_path / "out/features.h5") as store:
        for name, image_id in image_ids_by_name(database).items():
            assert database.num_keypoints_for_image(image_id) == store.num_keypoints(name) > 100
        ids = image_ids_by_name(database)
        assert all(database.exists_two_view_geometry(ids[a], ids[b]) for a, b in select_pairs("exhaustive", database))
        with MatchStore(tmp_path / "out/matches.h5") as match_store:
            for name0, name1 in select_pairs("exhaustive", database):  # the store holds what the database holds
                stored, _ = match_store.read(name0, name1)
                assert np.array_equal(stored, database.read_matches(ids[name0], ids[name1]))
        # pycolmap lists only pairs that passed verification (config other than UNDEFINED).
        assert len(database.read_two_view_geometries()[0]) >= 10


@pytest.mark.parametrize("method", ["msk", "sift"])
def test_second_run_does_no_work_and_changes_nothing(images, tmp_path, method):
    output = tmp_path / "out"
    extract_and_match(images, output, method)
    before = database_snapshot(output / "database.db")
    digests = {name: file_digest(output / name) for name in ("features.h5", "matches.h5")}
    extraction, matching = extract_and_match(images, output, method)
    assert extraction.extracted == [] and extraction.already_done == 6
    assert matching.matched == 0 and matching.verified == 0 and matching.already_done == 15
    assert database_snapshot(output / "database.db") == before
    assert {name: file_digest(output / name) for name in digests} == digests


def test_new_images_are_added_on_rerun(images, tmp_path):
    output = tmp_path / "out"
    moved = images.parent / "later.png"
    (images / "camera000001_frame000005.png").rename(moved)
    extract_and_match(images, output)
    moved.rename(images / "camera000001_frame000005.png")
    extraction, matching = extract_and_match(images, output)
    assert extraction.extracted == ["camera000001_frame000005.png"]
    assert matching.matched == 5 and matching.already_done == 10


def test_unreadable_images_are_skipped_without_trace(images, tmp_path):
    (images / "empty.png").write_bytes(b"")
    (images / "notes.jpg").write_text("not an image")
    extraction, _ = extract_and_match(images, tmp_path / "out")
    assert set(extraction.skipped) == {"empty.png", "notes.jpg"}
    assert extraction.skipped["empty.png"] == "empty file"
    with open_database(tmp_path / "out/database.db") as database:
        assert set(image_ids_by_name(database)) == {f"camera000001_frame00000{k}.png" for k in range(6)}


@pytest.mark.parametrize("method", ["msk", "sift"])
def test_features_of_another_kind_are_never_mixed(images, tmp_path, method):
    output = tmp_path / "out"
    import_images(output / "database.db", images, list_images(images))
    with open_database(output / "database.db") as database:  # as if COLMAP had extracted this image
        write_features(database, 1, random_features(10, np.uint8))
    with pytest.raises(FeatureKindMismatchError, match="--overwrite"):
        extract_features(images, output / "database.db", output / "features.h5", ExtractionConf(method, max_size=640))
    summary = extract_features(
        images, output / "database.db", output / "features.h5", ExtractionConf(method, max_size=640, overwrite=True)
    )
    assert len(summary.extracted) == 6


def test_results_do_not_depend_on_the_number_of_workers(images, tmp_path):
    """Each image and pair is worked on by one thread, whatever the number of workers and cores."""
    snapshots = []
    for workers in (1, 3):
        output = tmp_path / f"workers{workers}"
        conf = ExtractionConf(method="msk", max_size=640, max_keypoints=2048, workers=workers)
        extract_features(images, output / "database.db", output / "features.h5", conf)
        with open_database(output / "database.db") as database:
            pairs = select_pairs("exhaustive", database)
        matching = MatchingConf(workers=workers)
        match_features(output / "database.db", output / "features.h5", output / "matches.h5", pairs, matching)
        snapshots.append(database_snapshot(output / "database.db"))
    assert snapshots[0] == snapshots[1]
    assert len(snapshots[0]["keypoints"]) == 6 and len(snapshots[0]["geometries"]) >= 10


@pytest.mark.parametrize("method", ["msk", "sift+msk"])
def test_learned_descriptors_are_stored_in_half_precision_in_the_store_and_the_database(images, tmp_path, method):
    conf = ExtractionConf(method=method, max_size=640, max_keypoints=512)
    extract_features(images, tmp_path / "database.db", tmp_path / "features.h5", conf)
    name = list_images(images)[0]
    with FeatureStore(tmp_path / "features.h5") as store:
        features = store.read(name)
    with open_database(tmp_path / "database.db") as database:
        stored = database.read_descriptors(image_ids_by_name(database)[name]).data
    assert features.descriptors.dtype == np.float16 and len(features) > 100
    assert np.allclose(np.linalg.norm(features.descriptors.astype(np.float32), axis=1), 1, atol=1e-3)
    # Two bytes a dimension, the same values as the store's.
    assert np.array_equal(stored.view(np.float16), features.descriptors)


@pytest.mark.parametrize("method", ["sift", "msk"])
def test_upright_extraction_stores_no_orientations(images, tmp_path, method):
    conf = ExtractionConf(method=method, max_size=640, max_keypoints=512, upright=True)
    extract_features(images, tmp_path / "database.db", tmp_path / "features.h5", conf)
    with FeatureStore(tmp_path / "features.h5") as store:
        features = store.read(list_images(images)[0])
    assert len(features) > 100 and np.all(features.orientations == 0)
    # Oriented and upright features are different kinds: they are never mixed in one store.
    with pytest.raises(StoreMismatchError, match='"upright": true'):
        extract_features(
            images, tmp_path / "database.db", tmp_path / "features.h5", ExtractionConf(method=method, max_size=640)
        )


def test_matches_of_another_matcher_are_refused_or_replaced_as_if_never_made(images, tmp_path, capsys):
    """`msk match` refuses a store of another matcher (someone's results); `msk run`, whose folder is its own,
    replaces it: a change of matcher or pairs, or a new version, then ends as a fresh run would."""

    def match(output, matcher, pairs_spec, replace_other_matches=False):
        with open_database(output / "database.db") as database:
            pairs = select_pairs(pairs_spec, database)
        conf = MatchingConf(matcher=matcher, replace_other_matches=replace_other_matches)
        return match_features(output / "database.db", output / "features.h5", output / "matches.h5", pairs, conf)

    conf = ExtractionConf(method="sift", max_size=640)
    for output in (tmp_path / "changed", tmp_path / "fresh"):
        extract_features(images, output / "database.db", output / "features.h5", conf)
    match(tmp_path / "changed", "mnn", "exhaustive")
    before = database_snapshot(tmp_path / "changed/database.db")
    with pytest.raises(StoreMismatchError, match="use another --matches file"):
        match(tmp_path / "changed", "ratio", "sequential:1")
    assert database_snapshot(tmp_path / "changed/database.db") == before

    summary = match(tmp_path / "changed", "ratio", "sequential:1", replace_other_matches=True)
    assert "held matches of another matcher, its options or version; matching again" in capsys.readouterr().err
    assert summary.matched == summary.verified == 5  # the 10 other pairs' mnn matches are gone too
    match(tmp_path / "fresh", "ratio", "sequential:1")
    assert database_snapshot(tmp_path / "changed/database.db") == database_snapshot(tmp_path / "fresh/database.db")
    with MatchStore(tmp_path / "changed/matches.h5") as store:
        assert store.identity["name"] == "ratio"


def test_verification_keeps_the_matches_within_its_threshold(tmp_path):
    """Two synthetic views, exact projections, a quarter of the second view's keypoints moved 3 px."""
    options = pycolmap.SyntheticDatasetOptions()
    options.num_rigs, options.num_frames_per_rig, options.num_points3D = 1, 2, 400
    options.inlier_match_ratio = 1.0
    pycolmap.set_random_seed(0)
    with open_database(tmp_path / "database.db") as database:
        truth = pycolmap.synthesize_dataset(options, database)
        image0, image1 = sorted(database.read_all_images(), key=lambda image: image.name)
        matches = database.read_matches(image0.image_id, image1.image_id)
        keypoints0, keypoints1 = database.read_keypoints(image0.image_id), database.read_keypoints(image1.image_id)
        rng = np.random.default_rng(0)
        moved = matches[rng.permutation(len(matches))[: len(matches) // 4], 1]
        angle = rng.uniform(0, 2 * np.pi, len(moved))
        keypoints1[moved, :2] += 3 * np.c_[np.cos(angle), np.sin(angle)]
        database.update_keypoints(image1.image_id, keypoints1)
        database.clear_two_view_geometries()
    errors = epipolar_errors(
        truth, image0.name, image1.name, keypoints0[matches[:, 0], :2], keypoints1[matches[:, 1], :2]
    )
    far, exact = errors > 1.5, errors < 0.5  # moved along their epipolar lines, some stay exact
    assert far.sum() > 20 and exact.sum() > 250

    def inliers(max_error):
        verify_pairs(tmp_path / "database.db", [(image0.name, image1.name)], max_error=max_error)
        with open_database(tmp_path / "database.db") as database:
            geometry = database.read_two_view_geometry(image0.image_id, image1.image_id)
            database.clear_two_view_geometries()
        return np.isin(matches[:, 0], np.asarray(geometry.inlier_matches)[:, 0])

    assert inliers(None).all()  # COLMAP's 4 px
    strict = inliers(1.0)
    assert strict[exact].all() and not strict[far].any()
