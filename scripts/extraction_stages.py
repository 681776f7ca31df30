"""Seconds per stage of `msk` extraction on the first 3 fountain images (1536x1024), at a keypoint budget.

    .venv/bin/python scripts/extraction_stages.py 8192 [THREADS]

Stages: detection (forward pass, suppression, cap), refinement (position and scale), the search for
twins (msk.refinement.converged_duplicates), orientation (second orientations not added), cutting the
descriptor patches, the descriptor network (bfloat16 where the CPU has it); all but detection and the
twins summed over the chunks of keypoints the extractor runs them on.
Means over the images, on THREADS torch threads (default 1: as `msk extract` runs each image).
"""

import math
import sys
import time
import zlib  # noqa: F401  (before pycolmap: see colmap_plugin/__init__.py)

import numpy as np
import torch

from colmap_plugin.datasets import datasets_root
from colmap_plugin.images import list_images, read_image
from colmap_plugin.keypoints import affine_keypoints, pixel_to_colmap
from msk.data.patches import ImagePyramid
from msk.descriptor import describe_patches, descriptor_patches
from msk.detector import DetectionConf, detect
from msk.orientation import keypoint_orientations
from msk.plugin import DUPLICATE_MARGIN, KEYPOINT_CHUNK, resolve_bfloat16
from msk.refinement import converged_duplicates, refine_blobs
from msk.weights import load_descriptor, load_detector


@torch.inference_mode()
def main(max_keypoints: int, threads: int) -> None:
    torch.set_num_threads(threads)
    bfloat16 = resolve_bfloat16(None)
    detector, descriptor = load_detector(), load_descriptor()
    image_dir = datasets_root() / "eval" / "fountain-P11" / "images"
    seconds: dict[str, list[float]] = {}

    def timed(stage: str, run, chunks: dict[str, float] | None = None):
        """run(), its seconds added to the image's total in `chunks` or, without, recorded for the image."""
        start = time.perf_counter()
        result = run()
        spent = time.perf_counter() - start
        if chunks is None:
            seconds.setdefault(stage, []).append(spent)
        else:
            chunks[stage] = chunks.get(stage, 0.0) + spent
        return result

    for name in list_images(image_dir)[:3]:
        image = read_image(image_dir / name, 1600).gray
        tensor = torch.from_numpy(image).float().div(255)[None, None]
        pyramid = ImagePyramid(image)
        detected = max_keypoints + math.ceil(DUPLICATE_MARGIN * max_keypoints)  # as MskExtractor detects
        found = timed("detection", lambda: detect(detector, tensor, DetectionConf(max_keypoints=detected)))
        all_xy = pixel_to_colmap(found["xy"].numpy()).astype(np.float32)
        all_sigma = found["sigma"].numpy().astype(np.float32)
        stages: dict[str, float] = {}
        refined = [  # as MskExtractor refines them, a chunk at a time
            timed(
                "refinement",
                lambda: refine_blobs(pyramid, all_xy[i : i + KEYPOINT_CHUNK], all_sigma[i : i + KEYPOINT_CHUNK]),
                stages,
            )
            for i in range(0, len(all_xy), KEYPOINT_CHUNK)
        ]
        all_xy, all_sigma = (np.concatenate(parts) for parts in zip(*refined))
        distinct = ~timed("twins", lambda: converged_duplicates(all_xy, all_sigma), stages)
        all_xy, all_sigma = all_xy[distinct][:max_keypoints], all_sigma[distinct][:max_keypoints]
        for start in range(0, len(all_xy), KEYPOINT_CHUNK):  # as MskExtractor describes them
            xy, sigma = all_xy[start : start + KEYPOINT_CHUNK], all_sigma[start : start + KEYPOINT_CHUNK]
            angle = timed("orientation", lambda: keypoint_orientations(pyramid, xy, sigma)[0], stages)
            patches = timed(
                "patch cutting", lambda: descriptor_patches(pyramid, affine_keypoints(xy, sigma, angle)), stages
            )
            timed("descriptor network", lambda: describe_patches(descriptor, patches, bfloat16), stages)
        for stage, spent in stages.items():
            seconds.setdefault(stage, []).append(spent)
    print(f"{max_keypoints} keypoints, {image.shape[1]}x{image.shape[0]}, {threads} threads, bfloat16 {bfloat16}")
    for stage, values in seconds.items():
        print(f"{stage:20s} {np.mean(values):.3f} s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8192, int(sys.argv[2]) if len(sys.argv) > 2 else 1)
