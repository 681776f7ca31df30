"""The HDF5 stores keep hloc's layout and refuse to mix configurations."""

import h5py
import numpy as np
import pytest
from test_database import random_features

from colmap_plugin.store import FeatureStore, MatchStore, StoreMismatchError, names_to_pair


def test_feature_store_round_trip_in_hloc_layout(tmp_path):
    features = random_features(20, np.uint8)
    with FeatureStore(tmp_path / "features.h5", {"name": "sift"}) as store:
        store.write("sub/image.jpg", features, (640, 480))
        assert "sub/image.jpg" in store and "other.jpg" not in store
    with h5py.File(tmp_path / "features.h5") as raw:  # hloc: centre-origin keypoints, (D, N) descriptors
        assert np.allclose(raw["sub/image.jpg/keypoints"][()], features.keypoints - 0.5)
        assert raw["sub/image.jpg/descriptors"].shape == (128, 20)
    with FeatureStore(tmp_path / "features.h5") as store:
        back = store.read("sub/image.jpg")
        assert store.image_size("sub/image.jpg") == (640, 480)
    assert np.allclose(back.keypoints, features.keypoints)
    assert np.array_equal(back.descriptors, features.descriptors)


def test_half_written_entry_counts_as_missing(tmp_path):
    with FeatureStore(tmp_path / "features.h5") as store:
        store._file.create_group("crashed.jpg").create_dataset("keypoints", data=np.zeros((3, 2)))
        assert "crashed.jpg" not in store
        store.write("crashed.jpg", random_features(5, np.uint8), (10, 10))
        assert "crashed.jpg" in store and len(store.read("crashed.jpg")) == 5


def test_store_refuses_another_configuration(tmp_path):
    FeatureStore(tmp_path / "features.h5", {"name": "sift", "max_keypoints": 100}).close()
    with pytest.raises(StoreMismatchError, match="max_keypoints"):
        FeatureStore(tmp_path / "features.h5", {"name": "sift", "max_keypoints": 200})


def test_match_store_round_trip(tmp_path):
    matches = np.array([[0, 5], [3, 1]])
    with MatchStore(tmp_path / "matches.h5") as store:
        store.write("a/x.jpg", "b.jpg", matches, np.array([0.9, 0.8], np.float32), num_keypoints0=4)
        assert ("a/x.jpg", "b.jpg") in store and ("b.jpg", "a/x.jpg") not in store
        back, scores = store.read("a/x.jpg", "b.jpg")
    assert names_to_pair("a/x.jpg", "b.jpg") == "a-x.jpg/b.jpg"
    assert np.array_equal(back, matches) and np.allclose(scores, [0.9, 0.8])


def test_match_store_keeps_a_keypoint_matched_twice_and_hloc_sees_its_most_probable_match(tmp_path):
    matches = np.array([[0, 5], [0, 2], [3, 1]])  # keypoint 0 of image 0 proposed twice, as both-way candidates do
    with MatchStore(tmp_path / "matches.h5") as store:
        store.write("x.jpg", "y.jpg", matches, np.array([0.7, 0.9, 0.8], np.float32), num_keypoints0=4)
        back, scores = store.read("x.jpg", "y.jpg")
    assert np.array_equal(back, matches) and np.allclose(scores, [0.7, 0.9, 0.8])
    with h5py.File(tmp_path / "matches.h5") as raw:
        assert raw["x.jpg/y.jpg/matches0"][()].tolist() == [2, -1, -1, 1]
        assert np.allclose(raw["x.jpg/y.jpg/matching_scores0"][()], [0.9, 0, 0, 0.8])


def test_match_entry_without_the_full_match_list_counts_as_missing(tmp_path, capsys):
    """Stores written before every match was kept hold matches0 alone: those pairs are matched again."""
    with MatchStore(tmp_path / "matches.h5") as store:
        store.write("x.jpg", "y.jpg", np.array([[0, 1]]), np.array([0.9], np.float32), num_keypoints0=2)
        for name in ("matches", "scores"):
            del store._file["x.jpg/y.jpg"][name]
    assert capsys.readouterr().err == ""
    with MatchStore(tmp_path / "matches.h5") as store:
        assert ("x.jpg", "y.jpg") not in store
    assert "holds 1 pair(s) stored by an older version" in capsys.readouterr().err
