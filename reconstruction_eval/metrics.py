"""Accuracy of a reconstruction against a ground-truth COLMAP model: relative poses, camera centres, matches.

Images of the two models are matched by name. Every ground-truth image counts: one that the
reconstruction did not register scores the worst error, so registering fewer images never
improves a score.
"""

from itertools import combinations

import numpy as np
import pycolmap

POSE_THRESHOLDS = (1, 3, 5, 10)  # degrees
UNREGISTERED_ERROR = 180.0  # degrees, the largest possible angle


def registered_poses(model: pycolmap.Reconstruction) -> dict[str, pycolmap.Rigid3d]:
    """cam_from_world of each registered image, by image name."""
    return {image.name: image.cam_from_world() for image in model.images.values() if image.has_pose}


def angle_between(vector0: np.ndarray, vector1: np.ndarray) -> float:
    """Angle in degrees between two 3-vectors; 180 when either is zero (no direction to compare)."""
    if not np.any(vector0) or not np.any(vector1):
        return UNREGISTERED_ERROR
    # atan2 of sine and cosine: exact near 0 and 180 degrees, where arccos loses digits.
    return float(np.degrees(np.arctan2(np.linalg.norm(np.cross(vector0, vector1)), np.dot(vector0, vector1))))


def relative_pose_error(
    cam0_from_world: pycolmap.Rigid3d,
    cam1_from_world: pycolmap.Rigid3d,
    gt_cam0_from_world: pycolmap.Rigid3d,
    gt_cam1_from_world: pycolmap.Rigid3d,
) -> float:
    """max(rotation error, translation-direction error) in degrees of the pose of camera 1 in camera 0.

    The translation sign is kept (no min(e, 180 - e) as for essential matrices): a reconstruction
    fixes it through point chirality, so a reversed baseline is a real error.
    """
    estimate = cam1_from_world * cam0_from_world.inverse()
    truth = gt_cam1_from_world * gt_cam0_from_world.inverse()
    # Quaternion angle: exact at zero, unlike arccos of the trace.
    rotation_error = float(np.degrees(estimate.rotation.angle_to(truth.rotation)))
    translation_error = angle_between(estimate.translation, truth.translation)
    return max(rotation_error, translation_error)


def relative_pose_errors(model: pycolmap.Reconstruction, gt: pycolmap.Reconstruction) -> np.ndarray:
    """Errors (P,) in degrees over all P pairs of ground-truth images, pairs in sorted name order.

    A pair with an image that `model` did not register scores 180 degrees.
    """
    estimated = registered_poses(model)
    truth = registered_poses(gt)
    errors = [
        relative_pose_error(estimated[name0], estimated[name1], truth[name0], truth[name1])
        if name0 in estimated and name1 in estimated
        else UNREGISTERED_ERROR
        for name0, name1 in combinations(sorted(truth), 2)
    ]
    return np.asarray(errors, dtype=np.float64)


def pose_auc(errors: np.ndarray, thresholds: tuple[float, ...] = POSE_THRESHOLDS) -> dict[float, float]:
    """Area under the recall-vs-error curve up to each threshold, normalised, in percent.

    errors: (P,) in degrees. The same integral as SuperGlue's and LightGlue's `pose_auc`:
    recall steps up at each sorted error and the area is taken by the trapezoidal rule.
    """
    errors = np.sort(np.asarray(errors, dtype=np.float64))
    if errors.size == 0:
        raise ValueError("pose_auc needs at least one error")
    recall = np.arange(1, len(errors) + 1) / len(errors)
    errors = np.concatenate([[0.0], errors])
    recall = np.concatenate([[0.0], recall])
    aucs = {}
    for threshold in thresholds:
        last = np.searchsorted(errors, threshold)
        curve_recall = np.concatenate([recall[:last], [recall[last - 1]]])
        curve_errors = np.concatenate([errors[:last], [threshold]])
        aucs[threshold] = float(100 * np.trapezoid(curve_recall, x=curve_errors) / threshold)
    return aucs


def pose_auc_difference_interval(
    errors: np.ndarray,
    reference_errors: np.ndarray,
    thresholds: tuple[float, ...] = (1, 5),
    samples: int = 1000,
    coverage: float = 0.95,
    seed: int = 0,
) -> dict[float, tuple[float, float, float]]:
    """AUC of `errors` minus that of `reference_errors` at each threshold, with a bootstrap interval.

    errors, reference_errors: (P,) in degrees over the P = n (n - 1) / 2 pairs of the same n images,
    in `relative_pose_errors`' order. Images, not pairs, are drawn with replacement: the pairs of one
    image share its pose, so an image posed badly spoils n - 1 pairs at once, and drawing pairs as
    if independent would give intervals too narrow. Each draw keeps the pairs of two different drawn
    images (a pair drawn twice counts twice). Returns {threshold: (difference, low, high)}, the
    interval holding `coverage` of the draws' differences, in percentage points. Seeded: the same
    errors give the same interval.
    """
    errors, reference_errors = np.asarray(errors, dtype=np.float64), np.asarray(reference_errors, dtype=np.float64)
    num_images = int(round((1 + np.sqrt(1 + 8 * len(errors))) / 2))
    if len(errors) != len(reference_errors) or num_images * (num_images - 1) // 2 != len(errors) or num_images < 2:
        raise ValueError(
            f"need the errors of all pairs of the same images, in both, not {len(errors)} and {len(reference_errors)}"
        )
    pair_index = np.zeros((num_images, num_images), dtype=np.int64)
    first, second = np.triu_indices(num_images, k=1)  # combinations(range(n), 2)'s order
    pair_index[first, second] = pair_index[second, first] = np.arange(len(errors))
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(samples):
        drawn = rng.integers(0, num_images, num_images)
        a, b = drawn[first], drawn[second]  # every two positions of the draw
        chosen = pair_index[a[a != b], b[a != b]]
        if len(chosen):
            auc, reference = pose_auc(errors[chosen], thresholds), pose_auc(reference_errors[chosen], thresholds)
            differences.append([auc[t] - reference[t] for t in thresholds])
    tails = 100 * (1 - coverage) / 2
    low, high = np.percentile(np.array(differences), [tails, 100 - tails], axis=0)
    auc, reference = pose_auc(errors, thresholds), pose_auc(reference_errors, thresholds)
    return {t: (auc[t] - reference[t], float(low[i]), float(high[i])) for i, t in enumerate(thresholds)}


def umeyama_alignment(source: np.ndarray, target: np.ndarray) -> pycolmap.Sim3d | None:
    """Least-squares similarity target_from_source of points (N, 3) (Umeyama, PAMI 1991).

    None when the points are (nearly) collinear, where the rotation about the line is free.
    Written out because `pycolmap.estimate_sim3d` refuses exactly coplanar points, a common
    camera layout (all photos taken at one height).
    """
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    source_centred, target_centred = source - source_mean, target - target_mean
    covariance = target_centred.T @ source_centred / len(source)
    u, singular_values, vt = np.linalg.svd(covariance)
    if singular_values[1] <= 1e-12 * max(singular_values[0], np.finfo(float).tiny):
        return None
    signs = np.array([1.0, 1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ np.diag(signs) @ vt
    scale = float(singular_values @ signs / np.mean(np.sum(source_centred**2, axis=1)))
    translation = target_mean - scale * rotation @ source_mean
    return pycolmap.Sim3d(scale, pycolmap.Rotation3d(rotation), translation)


def camera_center_errors(model: pycolmap.Reconstruction, gt: pycolmap.Reconstruction) -> np.ndarray:
    """Distances (N,) between camera centres after aligning `model` to `gt`, one per GT image.

    In sorted name order and in the units of `gt`. The similarity is the least-squares one
    over all images registered in both models: no RANSAC threshold is needed, which would
    depend on the unknown scale of the scene. Images the model did not register, and every
    image when fewer than 3 are registered or they lie on a line (no unique similarity),
    score infinity.
    """
    estimated = {name: pose.tgt_origin_in_src() for name, pose in registered_poses(model).items()}
    truth = {name: pose.tgt_origin_in_src() for name, pose in registered_poses(gt).items()}
    names = sorted(truth)
    common = [name for name in names if name in estimated]
    errors = np.full(len(names), np.inf)
    if len(common) < 3:
        return errors
    source = np.array([estimated[name] for name in common])
    target = np.array([truth[name] for name in common])
    gt_from_model = umeyama_alignment(source, target)
    if gt_from_model is None:
        return errors
    errors[[names.index(name) for name in common]] = np.linalg.norm(gt_from_model * source - target, axis=1)
    return errors


def epipolar_errors(
    gt: pycolmap.Reconstruction, name0: str, name1: str, points0: np.ndarray, points1: np.ndarray
) -> np.ndarray:
    """Sampson distances (K,) in pixels of matches points0 (K, 2) <-> points1 (K, 2) under the true geometry.

    Points are COLMAP image coordinates of ground-truth images `name0` and `name1` (as keypoints are
    stored). The Sampson distance is, to first order, the smallest displacement of the two points
    together that puts them on each other's epipolar lines: in a rectified stereo pair, keypoints
    d px apart vertically score d / sqrt(2) (each moves d / 2). It sees no error along the epipolar
    lines. Each camera's distortion is removed first, so any COLMAP camera model of the ground truth
    is exact.
    """
    images = {image.name: image for image in gt.images.values()}
    image0, image1 = images[name0], images[name1]
    camera0, camera1 = gt.cameras[image0.camera_id], gt.cameras[image1.camera_id]
    relative = image1.cam_from_world() * image0.cam_from_world().inverse()
    tx, ty, tz = relative.translation
    essential = np.array([[0, -tz, ty], [tz, 0, -tx], [-ty, tx, 0]]) @ relative.rotation.matrix()
    k0, k1 = camera0.calibration_matrix(), camera1.calibration_matrix()
    fundamental = np.linalg.inv(k1).T @ essential @ np.linalg.inv(k0)
    # Undistorted pixels: the camera's rays through the points, seen by its distortion-free pinhole K.
    undistorted0 = np.c_[camera0.cam_from_img(np.asarray(points0, np.float64)), np.ones(len(points0))] @ k0.T
    undistorted1 = np.c_[camera1.cam_from_img(np.asarray(points1, np.float64)), np.ones(len(points1))] @ k1.T
    lines1 = undistorted0 @ fundamental.T  # epipolar lines in image 1, (K, 3)
    lines0 = undistorted1 @ fundamental  # in image 0
    algebraic = np.sum(undistorted1 * lines1, axis=1)
    gradient = np.sqrt(np.sum(lines1[:, :2] ** 2, axis=1) + np.sum(lines0[:, :2] ** 2, axis=1))
    return np.abs(algebraic) / np.maximum(gradient, np.finfo(float).tiny)
