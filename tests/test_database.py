"""What the plugin writes is what pycolmap reads back."""

import numpy as np
import pycolmap
import pytest

from colmap_plugin.database import image_ids_by_name, import_images, open_database, write_features
from colmap_plugin.features import LEARNED_DESCRIPTOR_DTYPE, Features, stored_descriptors
from colmap_plugin.store import FeatureStore


def random_features(count: int, descriptor_dtype, seed: int = 0) -> Features:
    rng = np.random.default_rng(seed)
    descriptors = (
        rng.integers(0, 256, (count, 128)).astype(np.uint8)
        if descriptor_dtype == np.uint8
        else rng.standard_normal((count, 64)).astype(descriptor_dtype)
    )
    return Features(
        keypoints=rng.uniform(0, 500, (count, 2)).astype(np.float32),
        scales=rng.uniform(1, 20, count).astype(np.float32),
        orientations=rng.uniform(-np.pi, np.pi, count).astype(np.float32),
        scores=rng.uniform(0, 1, count).astype(np.float32),
        descriptors=descriptors,
    )


@pytest.fixture
def database_with_images(tmp_path, synthetic_scene):
    path = tmp_path / "database.db"
    import_images(path, synthetic_scene / "images", ["camera000001_frame000000.png", "camera000001_frame000001.png"])
    return path


@pytest.mark.parametrize("descriptor_dtype", [np.uint8, LEARNED_DESCRIPTOR_DTYPE, np.float32])
def test_features_round_trip(database_with_images, descriptor_dtype):
    features = random_features(50, descriptor_dtype)
    with open_database(database_with_images) as database:
        image_id = image_ids_by_name(database)["camera000001_frame000000.png"]
        write_features(database, image_id, features)
    with open_database(database_with_images) as database:
        keypoints = database.read_keypoints(image_id)
        descriptors = database.read_descriptors(image_id)
    assert np.array_equal(keypoints[:, :2], features.keypoints)
    rows = pycolmap.keypoints_to_matrix(pycolmap.keypoints_from_matrix(keypoints))
    assert np.allclose(rows[:, 2], features.scales, rtol=1e-5)
    assert np.allclose(rows[:, 3], features.orientations, atol=1e-5)
    # Learned descriptors are kept in LEARNED_DESCRIPTOR_DTYPE whatever type a backend returns, as the store keeps them.
    stored = descriptors.data if descriptor_dtype == np.uint8 else descriptors.data.view(LEARNED_DESCRIPTOR_DTYPE)
    assert np.array_equal(stored, stored_descriptors(features.descriptors))
    with FeatureStore(database_with_images.with_name("features.h5"), {"name": "test"}) as store:
        store.write("image.png", features, (640, 480))
        assert np.array_equal(store.read("image.png").descriptors, stored)


def test_import_single_camera_is_shared_across_runs(tmp_path, synthetic_scene):
    path = tmp_path / "database.db"
    images = synthetic_scene / "images"
    import_images(path, images, ["camera000001_frame000000.png"], camera_mode="single")
    import_images(path, images, ["camera000001_frame000001.png"], camera_mode="single")
    with open_database(path) as database:
        assert database.num_cameras() == 1
        assert {image.camera_id for image in database.read_all_images()} == {1}
