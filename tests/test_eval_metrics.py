"""Pose metrics on hand-made reconstructions whose errors are known in advance."""

from itertools import combinations

import numpy as np
import pycolmap
import pytest

from reconstruction_eval.metrics import (
    camera_center_errors,
    epipolar_errors,
    pose_auc,
    pose_auc_difference_interval,
    relative_pose_errors,
)


def rotation_about_z(degrees: float) -> pycolmap.Rotation3d:
    half = np.radians(degrees) / 2
    return pycolmap.Rotation3d(np.array([0.0, 0.0, np.sin(half), np.cos(half)]))  # xyzw


def make_model(poses: dict[str, pycolmap.Rigid3d], unregistered: tuple[str, ...] = ()) -> pycolmap.Reconstruction:
    """A model with one PINHOLE camera per image, `poses` as cam_from_world, some images unregistered."""
    model = pycolmap.Reconstruction()
    for image_id, (name, cam_from_world) in enumerate(sorted(poses.items()), start=1):
        camera = pycolmap.Camera.create_from_model_id(image_id, pycolmap.CameraModelId.PINHOLE, 500.0, 640, 480)
        model.add_camera_with_trivial_rig(camera)
        model.add_image_with_trivial_frame(
            pycolmap.Image(name=name, camera_id=image_id, image_id=image_id), cam_from_world
        )
        if name in unregistered:
            model.deregister_frame(image_id)
    return model


def gt_poses() -> dict[str, pycolmap.Rigid3d]:
    """Four cameras, not coplanar in position, with different orientations."""
    centers = {"a.jpg": [0, 0, 0], "b.jpg": [1, 0, 0], "c.jpg": [0, 1, 0.5], "d.jpg": [1, 1, 2]}
    poses = {}
    for index, (name, center) in enumerate(centers.items()):
        rotation = rotation_about_z(10 * index)
        translation = -(rotation.matrix() @ np.asarray(center, dtype=float))
        poses[name] = pycolmap.Rigid3d(rotation, translation)
    return poses


def similar_poses(poses: dict[str, pycolmap.Rigid3d], scale: float) -> dict[str, pycolmap.Rigid3d]:
    """The same cameras in a world rotated 30 degrees, shifted and scaled (a gauge change)."""
    model_from_gt = pycolmap.Sim3d(scale, rotation_about_z(30), np.array([5.0, -2.0, 1.0]))
    gt_from_model = model_from_gt.inverse()
    moved = {}
    for name, cam_from_world in poses.items():
        world_to_cam = cam_from_world.matrix() @ np.vstack([gt_from_model.matrix(), [0, 0, 0, 1]])
        # Dividing out the scale keeps a rigid cam_from_world; the direction of t is unchanged.
        rotation = world_to_cam[:, :3] / np.cbrt(np.linalg.det(world_to_cam[:, :3]))
        moved[name] = pycolmap.Rigid3d(pycolmap.Rotation3d(rotation), world_to_cam[:, 3] * scale)
    return moved


def test_perfect_reconstruction_scores_auc_100():
    gt = make_model(gt_poses())
    model = make_model(similar_poses(gt_poses(), scale=3.0))
    errors = relative_pose_errors(model, gt)
    assert errors.shape == (6,)
    np.testing.assert_allclose(errors, 0, atol=1e-6)
    assert pose_auc(errors) == pytest.approx({1: 100, 3: 100, 5: 100, 10: 100})
    np.testing.assert_allclose(camera_center_errors(model, gt), 0, atol=1e-9)


def test_known_rotation_error_lands_at_its_angle():
    poses = gt_poses()
    wrong = dict(poses)
    # Rotating camera d about its own centre by 4 degrees: rotation error 4, centre unchanged.
    rotated = rotation_about_z(4) * poses["d.jpg"].rotation
    wrong["d.jpg"] = pycolmap.Rigid3d(rotated, -(rotated.matrix() @ poses["d.jpg"].tgt_origin_in_src()))
    errors = relative_pose_errors(make_model(wrong), make_model(poses))
    # Pairs in sorted name order: ab ac ad bc bd cd; the three with d are off by 4 degrees.
    np.testing.assert_allclose(errors, [0, 0, 4, 0, 4, 4], atol=1e-6)
    # Half of the pairs are exact. Up to 3 degrees recall stays 0.5: AUC 50 %. Beyond, the curve
    # is SuperGlue's: a trapezoid from (0, 1/2) to (4, 4/6), then recall 1 up to the threshold.
    auc = pose_auc(errors)
    assert auc[1] == pytest.approx(50)
    assert auc[3] == pytest.approx(50)
    ramp = 4 * (1 / 2 + 4 / 6) / 2
    assert auc[5] == pytest.approx(100 * (ramp + 1) / 5)
    assert auc[10] == pytest.approx(100 * (ramp + 6) / 10)


def test_translation_direction_error_counts():
    poses = gt_poses()
    wrong = dict(poses)
    # Camera b moved from (1, 0, 0) to (1, 1, 0) with the same orientation: seen from a, the
    # baseline turns by 45 degrees while every rotation stays exact.
    rotation = poses["b.jpg"].rotation
    wrong["b.jpg"] = pycolmap.Rigid3d(rotation, -(rotation.matrix() @ np.array([1.0, 1.0, 0.0])))
    errors = relative_pose_errors(make_model(wrong), make_model(poses))
    assert errors[0] == pytest.approx(45)


def test_unregistered_image_counts_as_180_degrees():
    gt = make_model(gt_poses())
    model = make_model(gt_poses(), unregistered=("c.jpg",))
    errors = relative_pose_errors(model, gt)
    np.testing.assert_allclose(errors, [0, 180, 0, 180, 0, 180], atol=1e-6)
    assert pose_auc(errors)[10] == pytest.approx(50)
    centers = camera_center_errors(model, gt)
    assert np.isinf(centers[2]) and np.allclose(centers[[0, 1, 3]], 0, atol=1e-9)


def test_image_missing_from_model_counts_like_unregistered():
    poses = gt_poses()
    model = make_model({name: pose for name, pose in poses.items() if name != "a.jpg"})
    errors = relative_pose_errors(model, make_model(poses))
    np.testing.assert_allclose(errors, [180, 180, 180, 0, 0, 0], atol=1e-6)


def test_pose_auc_matches_the_superglue_integral():
    # Errors 0.5 and 2 out of two pairs: recall 0.5 from 0.5 to 2, 1 from 2 onwards.
    auc = pose_auc(np.array([2.0, 0.5]), thresholds=(1, 3))
    # Up to 1: trapezoid (0,0)-(0.5,0.5) = 0.125, then 0.5 * 0.5 = 0.25 -> 0.375 / 1.
    assert auc[1] == pytest.approx(37.5)
    # Up to 3: 0.125 + trapezoid (0.5,0.5)-(2,1) = 1.125, then 1 * 1 = 1 -> 2.25 / 3.
    assert auc[3] == pytest.approx(75)
    with pytest.raises(ValueError):
        pose_auc(np.array([]))


def pair_errors(num_images: int, per_image: np.ndarray) -> np.ndarray:
    """Errors of all pairs of images (in relative_pose_errors' order): the sum of the two images' own errors."""
    return np.array([per_image[i] + per_image[j] for i, j in combinations(range(num_images), 2)])


def test_pose_auc_difference_of_equal_errors_is_zero_with_no_spread():
    errors = pair_errors(8, np.linspace(0.1, 0.8, 8))
    assert pose_auc_difference_interval(errors, errors) == {1: (0, 0, 0), 5: (0, 0, 0)}


def test_pose_auc_difference_of_errors_better_on_every_pair_stays_positive():
    reference = pair_errors(8, np.linspace(0.1, 0.8, 8))
    difference, low, high = pose_auc_difference_interval(reference / 2, reference)[1]
    assert 0 < low <= difference <= high
    assert pose_auc_difference_interval(reference / 2, reference) == pose_auc_difference_interval(
        reference / 2, reference
    )


def test_pose_auc_difference_from_one_image_can_vanish_when_that_image_is_not_drawn():
    # Only the pairs of image 0 differ. Images, not pairs, are resampled: about a third of the
    # draws leave image 0 out and see no difference, so the interval reaches 0; resampling the 28
    # pairs independently would almost never leave out all 7 of image 0's.
    reference = pair_errors(8, np.full(8, 0.2))
    worse = reference.copy()
    worse[:7] = 3.0  # the pairs (0, 1) ... (0, 7) come first
    difference, low, high = pose_auc_difference_interval(worse, reference)[1]
    assert low <= difference < high == 0


def test_pose_auc_difference_needs_all_pairs_of_the_same_images():
    with pytest.raises(ValueError, match="all pairs"):
        pose_auc_difference_interval(np.ones(5), np.ones(5))  # 5 is no n (n - 1) / 2
    with pytest.raises(ValueError, match="all pairs"):
        pose_auc_difference_interval(np.ones(6), np.ones(3))


def test_camera_centre_errors_survive_a_gauge_change():
    # The model sits in another frame (rotated, shifted, scale 3); alignment must undo it exactly.
    errors = camera_center_errors(make_model(similar_poses(gt_poses(), scale=3.0)), make_model(gt_poses()))
    np.testing.assert_allclose(errors, 0, atol=1e-9)


def test_camera_centre_error_of_a_displacement_no_similarity_can_absorb():
    # Centres at the corners (+-1, +-1, 0) of a square (shifted). The model lifts two opposite
    # corners by d and lowers the other two by d (a saddle), then scales and shifts everything.
    # No rotation or translation reduces a saddle; the least-squares scale shrinks the model by
    # s = 2 / (2 + d^2), leaving on every camera sqrt(2 (1 - s)^2 + s^2 d^2) = d sqrt(2 / (2 + d^2)).
    corners = np.array([[0, 0, 0], [2, 0, 0], [2, 2, 0], [0, 2, 0]], dtype=float)
    names = ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    d = 0.3
    saddle = corners + np.array([[0, 0, d], [0, 0, -d], [0, 0, d], [0, 0, -d]])

    def model_of(centers: np.ndarray) -> pycolmap.Reconstruction:
        return make_model(
            {
                name: pycolmap.Rigid3d(pycolmap.Rotation3d(), -center)
                for name, center in zip(names, centers, strict=True)
            }
        )

    errors = camera_center_errors(model_of(1.7 * saddle + 5.0), model_of(corners))
    np.testing.assert_allclose(errors, d * np.sqrt(2 / (2 + d**2)), rtol=1e-9)


def test_camera_centre_errors_need_three_registered_images():
    model = make_model(gt_poses(), unregistered=("a.jpg", "b.jpg"))
    assert np.isinf(camera_center_errors(model, make_model(gt_poses()))).all()


def stereo_pair(camera_b: pycolmap.Camera | None = None) -> tuple[pycolmap.Reconstruction, np.ndarray, np.ndarray]:
    """A rectified pair (b is 1 m right of a, same orientation) and where 50 points 4-9 m ahead appear in both."""
    identity = pycolmap.Rotation3d()
    model = make_model(
        {"a.jpg": pycolmap.Rigid3d(identity, [0, 0, 0]), "b.jpg": pycolmap.Rigid3d(identity, [-1, 0, 0])}
    )
    if camera_b is not None:
        model.cameras[2] = camera_b
    points = np.random.default_rng(0).uniform([-2, -1.5, 4], [2, 1.5, 9], size=(50, 3))
    images = {image.name: image for image in model.images.values()}
    projections = [
        model.cameras[images[name].camera_id].img_from_cam(points + [-1.0 if name == "b.jpg" else 0.0, 0, 0])
        for name in ("a.jpg", "b.jpg")
    ]
    return model, *projections


def test_epipolar_error_is_zero_for_true_matches_and_blind_along_the_epipolar_lines():
    model, points_a, points_b = stereo_pair()
    np.testing.assert_allclose(epipolar_errors(model, "a.jpg", "b.jpg", points_a, points_b), 0, atol=1e-9)
    # Rectified: the epipolar lines are the image rows, so a shift along a row is no error at all.
    np.testing.assert_allclose(epipolar_errors(model, "a.jpg", "b.jpg", points_a, points_b + [3.0, 0]), 0, atol=1e-9)


def test_epipolar_error_of_a_vertical_offset_is_the_smallest_total_displacement():
    model, points_a, points_b = stereo_pair()
    errors = epipolar_errors(model, "a.jpg", "b.jpg", points_a, points_b + [0, 2.0])
    np.testing.assert_allclose(errors, 2.0 / np.sqrt(2), rtol=1e-9)  # each point moves 1 px
    swapped = epipolar_errors(model, "b.jpg", "a.jpg", points_b + [0, 2.0], points_a)
    np.testing.assert_allclose(swapped, errors, rtol=1e-9)


def test_epipolar_error_removes_the_ground_truths_lens_distortion():
    distorted = pycolmap.Camera.create_from_model_id(2, pycolmap.CameraModelId.SIMPLE_RADIAL, 500.0, 640, 480)
    distorted.params = [500.0, 320.0, 240.0, 0.2]
    model, points_a, points_b = stereo_pair(distorted)
    assert np.abs(points_b[:, 1] - points_a[:, 1]).max() > 5  # distortion bends the rows of image b
    np.testing.assert_allclose(epipolar_errors(model, "a.jpg", "b.jpg", points_a, points_b), 0, atol=1e-6)
