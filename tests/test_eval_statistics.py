"""Reconstruction and database statistics on hand-made models and databases."""

import numpy as np
import pycolmap
import pytest

from reconstruction_eval.statistics import (
    database_statistics,
    model_statistics,
    observations_per_image,
    track_lengths,
    verified_pairs,
)

Config = pycolmap.TwoViewGeometryConfiguration


def make_model() -> pycolmap.Reconstruction:
    """Three registered images and one unregistered one; three 3D points seen by 3, 2 and 2 images."""
    model = pycolmap.Reconstruction()
    camera = pycolmap.Camera.create_from_model_id(1, pycolmap.CameraModelId.SIMPLE_PINHOLE, 100.0, 200, 200)
    model.add_camera_with_trivial_rig(camera)
    for image_id, name in enumerate(["a.jpg", "b.jpg", "c.jpg", "d.jpg"], start=1):
        image = pycolmap.Image(name=name, keypoints=np.full((3, 2), 100.0), camera_id=1, image_id=image_id)
        model.add_image_with_trivial_frame(
            image, pycolmap.Rigid3d(pycolmap.Rotation3d(), np.array([image_id, 0.0, 0.0]))
        )
    tracks = [[(1, 0), (2, 0), (3, 0)], [(1, 1), (2, 1)], [(2, 2), (3, 2)]]
    for track in tracks:
        elements = [pycolmap.TrackElement(image_id, index) for image_id, index in track]
        model.add_point3D(np.array([0.0, 0.0, 5.0]), pycolmap.Track(elements))
    model.deregister_frame(4)
    return model


def test_model_statistics_of_a_known_model():
    model = make_model()
    stats = model_statistics(model)
    assert stats["registered"] == 3
    assert stats["points3D"] == 3
    assert stats["observations"] == 7
    assert stats["track_length"] == stats["images_per_point"] == pytest.approx(7 / 3)
    assert stats["obs_per_image"] == pytest.approx(7 / 3)
    np.testing.assert_array_equal(np.sort(track_lengths(model)), [2, 2, 3])
    # b.jpg sees all three points, d.jpg is not registered, e.jpg is not in the model.
    np.testing.assert_array_equal(
        observations_per_image(model, ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]), [2, 3, 2, 0, 0]
    )


def test_two_observations_of_a_point_in_one_image_lengthen_colmaps_track_but_not_the_images_per_point():
    # Two keypoints at one spot of a.jpg (a second orientation, or two detections refined onto one blob).
    model = make_model()
    point_id = next(i for i, point in model.points3D.items() if point.track.length() == 3)  # seen by a, b and c
    model.add_observation(point_id, pycolmap.TrackElement(1, 2))
    stats = model_statistics(model)
    assert stats["track_length"] == pytest.approx(8 / 3)
    assert stats["images_per_point"] == pytest.approx(7 / 3)
    np.testing.assert_array_equal(np.sort(track_lengths(model)), [2, 2, 3])


def test_statistics_of_no_model_are_zero():
    assert model_statistics(None)["registered"] == 0
    assert len(track_lengths(None)) == 0
    np.testing.assert_array_equal(observations_per_image(None, ["a.jpg"]), [0])


def test_verified_pairs_keep_usable_geometry_with_enough_inliers(tmp_path):
    database_path = tmp_path / "database.db"
    database = pycolmap.Database.open(database_path)
    camera_id = database.write_camera(
        pycolmap.Camera.create_from_model_id(1, pycolmap.CameraModelId.SIMPLE_PINHOLE, 100.0, 200, 200)
    )
    ids = [database.write_image(pycolmap.Image(name=f"{index}.jpg", camera_id=camera_id)) for index in range(5)]
    for image_id in ids:
        database.write_keypoints(image_id, np.zeros((40, 2), np.float32))
    cases = [
        (0, 1, Config.CALIBRATED, 30),  # kept
        (0, 2, Config.PLANAR_OR_PANORAMIC, 15),  # kept: exactly the minimum
        (0, 3, Config.UNCALIBRATED, 14),  # too few inliers
        (1, 2, Config.DEGENERATE, 30),
        (1, 3, Config.WATERMARK, 30),
        (2, 3, Config.UNDEFINED, 30),
    ]
    for index0, index1, config, inliers in cases:
        geometry = pycolmap.TwoViewGeometry()
        geometry.config = config
        geometry.inlier_matches = np.column_stack([np.arange(inliers), np.arange(inliers)[::-1]]).astype(np.uint32)
        database.write_two_view_geometry(ids[index0], ids[index1], geometry)
    database.close()

    pairs = verified_pairs(database_path)
    assert sorted(pairs) == [("0.jpg", "1.jpg"), ("0.jpg", "2.jpg")]
    np.testing.assert_array_equal(pairs[("0.jpg", "2.jpg")][:, 1], np.arange(15)[::-1])
    stats = database_statistics(database_path)
    assert stats["images"] == 5
    assert stats["keypoints_per_image"] == 40
    assert stats["verified_pairs"] == 2
    assert stats["inlier_matches"] == 45


def test_verified_pairs_are_keyed_in_name_order(tmp_path):
    # Image ids in the opposite order of the names: the key and the match columns follow the names.
    database_path = tmp_path / "database.db"
    database = pycolmap.Database.open(database_path)
    camera_id = database.write_camera(
        pycolmap.Camera.create_from_model_id(1, pycolmap.CameraModelId.SIMPLE_PINHOLE, 100.0, 200, 200)
    )
    id_b = database.write_image(pycolmap.Image(name="b.jpg", camera_id=camera_id))
    id_a = database.write_image(pycolmap.Image(name="a.jpg", camera_id=camera_id))
    geometry = pycolmap.TwoViewGeometry()
    geometry.config = Config.CALIBRATED
    geometry.inlier_matches = np.column_stack([np.arange(20), np.arange(20) + 100]).astype(np.uint32)  # b -> a
    database.write_two_view_geometry(id_b, id_a, geometry)
    database.close()
    inliers = verified_pairs(database_path)[("a.jpg", "b.jpg")]
    np.testing.assert_array_equal(inliers[:, 0], np.arange(20) + 100)
    np.testing.assert_array_equal(inliers[:, 1], np.arange(20))
