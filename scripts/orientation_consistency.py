"""Do MSK orientations follow an in-plane turn? The share within 10 degrees, per orientation patch size.

    .venv/bin/python scripts/orientation_consistency.py

Reads 8 images of the training scenes (never eval/), detects 1,000 MSK keypoints on each, turns
the image by 37 and 110 degrees and compares the orientations at the turned keypoints with the
originals plus the turn. This chose `msk.orientation.ORIENTATION_PATCH`.
"""

import zlib  # noqa: F401  (before pycolmap: see colmap_plugin/__init__.py)

import numpy as np
import torch

from colmap_plugin.datasets import datasets_root
from colmap_plugin.images import list_images, read_image
from colmap_plugin.keypoints import pixel_to_colmap
from msk.data.patches import PatchConf
from msk.data.scenes import discover_scenes
from msk.detector import DetectionConf, detect
from msk.orientation import dominant_orientation
from msk.weights import load_detector
from reconstruction_eval.rotation_bench import rotate_gray

PATCHES = (
    PatchConf(),
    PatchConf(patch_size=24, window=9.0),
    PatchConf(patch_size=20, window=9.0),
    PatchConf(patch_size=16, window=9.0),
)


def main() -> None:
    torch.set_num_threads(2)
    paths = [
        scene.image_dir / name
        for scene in discover_scenes(datasets_root() / "train")
        for name in list_images(scene.image_dir)
    ][::40][:8]
    detector = load_detector()
    within = {patch: [] for patch in PATCHES}
    for path in paths:
        image = read_image(path, 1024).gray
        with torch.inference_mode():
            found = detect(detector, torch.from_numpy(image).float().div(255)[None, None], DetectionConf(1000))
        xy, sigma = found["xy"].numpy().astype(np.float64), found["sigma"].numpy()
        for degrees in (37, 110):
            turned, matrix = rotate_gray(image, degrees)
            turned_xy = xy @ matrix[:2, :2].T + matrix[:2, 2]
            for patch in PATCHES:
                before = dominant_orientation(image, pixel_to_colmap(xy).astype(np.float32), sigma, patch)
                after = dominant_orientation(turned, pixel_to_colmap(turned_xy).astype(np.float32), sigma, patch)
                # A counter-clockwise turn on screen lowers image-coordinate angles by the turn.
                error = np.abs(np.angle(np.exp(1j * (after - before + np.radians(degrees)))))
                within[patch].append(np.mean(error < np.radians(10)))
    for patch, shares in within.items():
        print(f"{patch.patch_size} px over {patch.window:g} sigma: {np.mean(shares):.3f} within 10 degrees")


if __name__ == "__main__":
    main()
