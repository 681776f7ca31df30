"""How close repeated keypoints lie under random homographies of training images (no ground truth needed).

    .venv/bin/python scripts/keypoint_localization.py [METHODS] [MAX_KEYPOINTS]   # default: msk,sift 4096

Each of 12 training images (the first 3 of four scenes, 1024 px long side) is warped by a random
homography (rotation within +-20 degrees, scale within 2^(+-0.43), a slight perspective: seeded);
both images are extracted, image 0's keypoints are mapped into image 1 and paired with their mutual
nearest keypoint there. Printed per method: the share of image 0's visible keypoints so paired
within 1, 2 and 3 pixels (repeatability) and the mean and median distance of those pairs
(localization), then the 3-pixel pairs by keypoint scale. Both images go through the same
interpolation, so the figures compare methods, not absolute accuracy.
"""

import sys
import zlib  # noqa: F401  (before pycolmap: see colmap_plugin/__init__.py)

import numpy as np

from colmap_plugin.datasets import datasets_root
from colmap_plugin.features import create_extractor
from colmap_plugin.images import list_images, read_image
from colmap_plugin.keypoints import colmap_to_pixel
from reconstruction_eval.homography_metrics import inside, warp_image, warp_points

SCENES = ("drone_palm_desert", "vggsfm_british_museum", "sceaux_castle", "lund")
IMAGES_PER_SCENE = 3
MAX_SIZE = 1024
SCALE_BINS = ((0, 1.6), (1.6, 2.2), (2.2, 3), (3, 6), (6, np.inf))


def random_homography(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A homography (3, 3) in pixel-centre coordinates that turns and zooms an image of size (W, H) about its centre."""
    angle, zoom = np.deg2rad(rng.uniform(-20, 20)), np.exp(rng.uniform(-0.3, 0.3))
    centre = np.array(size) / 2
    turn = zoom * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    similarity = np.eye(3)
    similarity[:2, :2], similarity[:2, 2] = turn, centre - turn @ centre
    perspective = np.eye(3)
    perspective[2, :2] = rng.uniform(-1e-4, 1e-4, 2)
    return perspective @ similarity


def repeated_pairs(extractor, image: np.ndarray, homography: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Distances (K,) of mutual nearest keypoint pairs, image 0's scales (K,) and image 0's keypoints
    visible in image 1."""
    height, width = image.shape
    features0, features1 = extractor.extract(image), extractor.extract(warp_image(image, homography))
    mapped = warp_points(colmap_to_pixel(features0.keypoints.astype(np.float64)), homography)
    visible = inside(mapped, (width, height))
    mapped, points1 = mapped[visible], colmap_to_pixel(features1.keypoints.astype(np.float64))
    distances = np.linalg.norm(mapped[:, None] - points1[None], axis=2)  # (N, M)
    nearest1, nearest0 = distances.argmin(axis=1), distances.argmin(axis=0)
    mutual = nearest0[nearest1] == np.arange(len(mapped))
    return distances[np.arange(len(mapped)), nearest1][mutual], features0.scales[visible][mutual], len(mapped)


def main(methods: list[str], max_keypoints: int) -> None:
    root = datasets_root() / "train"
    folders = [root / scene / "images" for scene in SCENES]
    paths = [folder / name for folder in folders for name in list_images(folder)[:IMAGES_PER_SCENE]]
    if not paths:
        raise SystemExit(f"no images in {', '.join(map(str, folders))}: set MSK_DATASETS to the datasets folder")
    for method in methods:
        extractor = create_extractor(method, max_keypoints=max_keypoints)
        rng = np.random.default_rng(0)  # the same homographies for every method
        distances, scales, visible = [], [], 0
        for path in paths:
            image = read_image(path, MAX_SIZE).gray
            found, found_scales, count = repeated_pairs(extractor, image, random_homography(image.shape[::-1], rng))
            distances.append(found), scales.append(found_scales)
            visible += count
        distance, scale = np.concatenate(distances), np.concatenate(scales)
        print(f"{method}, {max_keypoints} keypoints, {len(paths)} images")
        for threshold in (1, 2, 3):
            within = distance < threshold
            print(
                f"  within {threshold} px: repeatability {within.sum() / visible:.3f}, "
                f"distance mean {distance[within].mean():.3f} median {np.median(distance[within]):.3f} px"
            )
        for low, high in SCALE_BINS:
            chosen = (distance < 3) & (scale >= low) & (scale < high)
            if chosen.any():
                print(
                    f"  scale [{low}, {high}): {chosen.sum()} pairs, distance mean {distance[chosen].mean():.3f} "
                    f"median {np.median(distance[chosen]):.3f} px"
                )


if __name__ == "__main__":
    main(
        sys.argv[1].split(",") if len(sys.argv) > 1 else ["msk", "sift"],
        int(sys.argv[2]) if len(sys.argv) > 2 else 4096,
    )
