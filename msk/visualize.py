"""`msk show keypoints`: what the detector sees — keypoints by scale and the score map of every level."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from colmap_plugin.images import ImageReadError, read_image  # noqa: E402
from reconstruction_eval.plots import save_figure  # noqa: E402

from .detector import (  # noqa: E402
    MIN_OCTAVE_SIDE,
    DetectionConf,
    detection_image,
    keypoints_from_maps,
    shrink_factors,
)
from .weights import load_detector  # noqa: E402


def synthetic_scene(width: int = 768, height: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A grey (H, W) uint8 test image of Gaussian blobs on a soft gradient, and the blobs (K, 3): x, y, sigma.

    Three rows (bright, dark, bright) of blobs with sigma 2, 4, 8, 16 and 32 px: a detector with a
    working scale-space marks each blob with a circle that grows along the row.
    """
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    image = 100 + 40 * cols / width
    sigmas = np.array([2, 4, 8, 16, 32], np.float32)
    gaps = 3 * (sigmas[:-1] + sigmas[1:])  # 3 sigma apart on either side
    centres_x = np.concatenate([[0], np.cumsum(gaps)])
    centres_x = 24 + centres_x * (width - 48 - 3 * sigmas[-1]) / centres_x[-1]
    blobs = []
    for y, sign in ((0.2 * height, 1), (0.5 * height, -1), (0.8 * height, 1)):
        for sigma, x in zip(sigmas, centres_x):
            image += sign * 90 * np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * sigma**2))
            blobs.append((x, y, sigma))
    noise = np.random.default_rng(seed).normal(0, 2, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8), np.array(blobs, np.float32)


@torch.inference_mode()
def show_keypoints(image_path: Path | None, output: Path, max_size: int = 1024, max_keypoints: int = 1024) -> int:
    """Draw keypoints (circles of radius 3 sigma, coloured by scale-space level) and the score maps.

    `image_path` None draws `synthetic_scene()`. Returns the number of keypoints drawn. ImageReadError
    if the image cannot be read or is too small for the detector at `max_size`.
    """
    model = load_detector()
    try:
        image = synthetic_scene()[0] if image_path is None else read_image(image_path, max_size).gray
    except ImageReadError as error:
        raise ImageReadError(f"{image_path}: {error}") from error
    if min(image.shape) < MIN_OCTAVE_SIDE:
        height, width = image.shape
        raise ImageReadError(
            f"{image_path}: {width}x{height} px at --max-size {max_size} is too small for the detector "
            f"(it needs {MIN_OCTAVE_SIDE} px on each side)"
        )
    tensor = torch.from_numpy(image).float().div(255)[None, None]
    conf = DetectionConf(max_keypoints=max_keypoints)
    seen = detection_image(tensor, conf.max_image_size)  # the image as the detector sees it, and its maps
    logits = [maps[0] for maps in model(seen)]  # each (L, h, w)
    found = keypoints_from_maps(model, logits, tensor, seen, conf)
    octaves = [torch.sigmoid(maps).numpy() for maps in logits]
    shrink = shrink_factors(tensor, seen).prod().sqrt().item()
    level_index = model.scale_index(found["sigma"] / shrink).numpy()  # levels are in the seen image's pixels

    levels = model.conf.levels_per_octave
    figure = plt.figure(figsize=(14, 2.2 * len(octaves) + 1))
    grid = figure.add_gridspec(len(octaves), levels + 3)
    axes = figure.add_subplot(grid[:, :3])
    axes.imshow(image, cmap="gray")
    colors = plt.get_cmap("viridis")(level_index / max(model.num_levels - 1, 1))
    for (x, y), sigma, color in zip(found["xy"].numpy(), found["sigma"].numpy(), colors):
        axes.add_patch(plt.Circle((x, y), 3 * sigma, fill=False, color=color, linewidth=0.8))
    axes.set_title(f"{len(found['xy'])} keypoints, radius 3 sigma, colour = scale level (purple fine, yellow coarse)")
    axes.axis("off")
    for octave, maps in enumerate(octaves):
        for level, scores in enumerate(maps):
            panel = figure.add_subplot(grid[octave, 3 + level])
            panel.imshow(scores, cmap="magma", vmin=0, vmax=1)
            panel.set_title(
                f"octave {octave} level {level}: sigma {model.level_sigma(octave, level) * shrink:.1f}px", fontsize=8
            )
            panel.axis("off")
    save_figure(figure, output)
    return len(found["xy"])
