"""What a reconstruction and its database hold, without ground truth: sizes, tracks, verified pairs."""

from pathlib import Path

import numpy as np
import pycolmap

from colmap_plugin.database import open_database

# Two-view configurations the mapper does not use as scene geometry.
UNUSABLE_CONFIGS = frozenset(
    {
        pycolmap.TwoViewGeometryConfiguration.UNDEFINED,
        pycolmap.TwoViewGeometryConfiguration.DEGENERATE,
        pycolmap.TwoViewGeometryConfiguration.WATERMARK,  # matches on an overlay, not the scene
    }
)


def model_statistics(model: pycolmap.Reconstruction | None) -> dict[str, float]:
    """Registered images, 3D points, observations, mean track length (COLMAP's: observations per 3D point),
    mean number of images per 3D point, observations per image, reprojection error.

    A 3D point can hold two observations of one image (two keypoints at one spot: SIFT's second
    orientations, or two detections refined onto one blob); COLMAP's track length counts both, the
    images per point once. `None` (the mapper built nothing) gives zeros, so a failed method still has a row.
    """
    if model is None or model.num_reg_images() == 0:
        return {
            "registered": 0,
            "points3D": 0,
            "observations": 0,
            "track_length": 0.0,
            "images_per_point": 0.0,
            "obs_per_image": 0.0,
            "reproj_error": 0.0,
        }
    return {
        "registered": model.num_reg_images(),
        "points3D": model.num_points3D(),
        "observations": model.compute_num_observations(),
        "track_length": model.compute_mean_track_length(),
        "images_per_point": float(np.mean(track_lengths(model))) if model.num_points3D() else 0.0,
        "obs_per_image": model.compute_mean_observations_per_reg_image(),
        "reproj_error": model.compute_mean_reprojection_error(),
    }


def track_lengths(model: pycolmap.Reconstruction | None) -> np.ndarray:
    """Number of images observing each 3D point, (P,) int: an image with two observations of a point counts once."""
    if model is None:
        return np.zeros(0, dtype=int)
    return np.array(
        [len({element.image_id for element in point.track.elements}) for point in model.points3D.values()], dtype=int
    )


def observations_per_image(model: pycolmap.Reconstruction | None, names: list[str]) -> np.ndarray:
    """Observations of 3D points in each image of `names` (N,); 0 for images not registered."""
    counts = (
        {} if model is None else {image.name: image.num_points3D for image in model.images.values() if image.has_pose}
    )
    return np.array([counts.get(name, 0) for name in names], dtype=int)


def verified_pairs(database_path: Path, min_num_inliers: int | None = None) -> dict[tuple[str, str], np.ndarray]:
    """Inlier matches (K, 2) of each pair that geometric verification accepted, keyed by image names.

    Keys are (name0, name1) with name0 < name1, whatever the image ids, so that databases of
    different methods agree; the columns of the matches follow the names.

    A pair counts when its configuration is usable scene geometry and it has at least
    `min_num_inliers` inliers (default: COLMAP's verification threshold).
    """
    if min_num_inliers is None:
        min_num_inliers = pycolmap.TwoViewGeometryOptions().min_num_inliers
    with open_database(database_path) as database:
        names = {image.image_id: image.name for image in database.read_all_images()}
        pair_ids, geometries = database.read_two_view_geometries()
    pairs = {}
    for pair_id, geometry in zip(pair_ids, geometries, strict=True):
        if geometry.config in UNUSABLE_CONFIGS or len(geometry.inlier_matches) < min_num_inliers:
            continue
        id0, id1 = pycolmap.pair_id_to_image_pair(pair_id)
        inliers = np.asarray(geometry.inlier_matches, dtype=np.int64)
        if names[id0] > names[id1]:
            id0, id1, inliers = id1, id0, inliers[:, ::-1]
        pairs[(names[id0], names[id1])] = inliers
    return pairs


def keypoint_positions(database_path: Path) -> dict[str, np.ndarray]:
    """Keypoint positions (N, 2) of each image, in COLMAP image coordinates, keyed by image name."""
    with open_database(database_path) as database:
        return {image.name: database.read_keypoints(image.image_id)[:, :2] for image in database.read_all_images()}


def database_statistics(database_path: Path) -> dict[str, float]:
    """Mean keypoints per image, raw matches, verified pairs and their inlier matches."""
    pairs = verified_pairs(database_path)
    with open_database(database_path) as database:
        num_images = database.num_images()
        keypoints = database.num_keypoints()
        matches = database.num_matches()
    return {
        "images": num_images,
        "keypoints_per_image": keypoints / max(num_images, 1),
        "matches": matches,
        "verified_pairs": len(pairs),
        "inlier_matches": int(sum(len(inliers) for inliers in pairs.values())),
    }
