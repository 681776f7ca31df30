"""Figures of the reports: curves, grouped bars, stage times and matches drawn over image pairs.

Every function takes plain arrays keyed by method name and writes one PNG; methods keep the
same colour in every figure of a report (the order of the dict).
"""

from collections.abc import Hashable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in tests

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pycolmap  # noqa: E402

from colmap_plugin.images import resized_shape  # noqa: E402
from colmap_plugin.keypoints import colmap_to_pixel, rescale_colmap  # noqa: E402

DPI = 110
MAX_LINES = 150  # matches drawn per pair and method: more hide the image
DISPLAY_SIZE = 900  # long side of images in match pictures


def _colors(names: list[str]) -> dict[str, str]:
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {name: cycle[index % len(cycle)] for index, name in enumerate(names)}


def save_figure(figure: plt.Figure, path: Path) -> None:
    """Render with Agg and write the PNG with pycolmap's own encoder.

    Not `savefig`: the pycolmap wheel exports its bundled zlib's symbols, and once pycolmap is
    imported before the system libz is loaded, every later zlib user in the process (Pillow,
    hence matplotlib's PNG writer, and Python's `zlib`) corrupts the heap and aborts.
    """
    figure.set_dpi(DPI)
    figure.tight_layout()
    figure.canvas.draw()
    rgb = np.ascontiguousarray(np.asarray(figure.canvas.buffer_rgba())[..., :3])
    plt.close(figure)
    bitmap = pycolmap.Bitmap.from_array(rgb)
    bitmap.set_jpeg_quality(85)  # used only for .jpg paths: figures with photos stay small
    if not bitmap.write(Path(path)):
        raise OSError(f"cannot write {path}")


def plot_curves(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    xlabel: str,
    ylabel: str,
    title: str,
    path: Path,
    marks: tuple[float, ...] = (),
    log_x: bool = False,
) -> None:
    """One line (x (T,), y (T,) in percent) per method; dotted verticals at `marks`."""
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    colors = _colors(list(curves))
    for name, (x, y) in curves.items():
        axes.plot(x, y, label=name, color=colors[name], linewidth=2)
    for mark in marks:
        axes.axvline(mark, color="gray", linestyle=":", linewidth=1)
    if log_x:
        axes.set_xscale("log")
    axes.set(xlabel=xlabel, ylabel=ylabel, title=title, ylim=(0, 101))
    axes.grid(alpha=0.3)
    axes.legend(loc="best")
    save_figure(figure, path)


def recall_curve(errors: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The thresholds (T,) and the percentage of `errors` (P,) at or below each."""
    return thresholds, 100 * (np.asarray(errors)[None, :] <= thresholds[:, None]).mean(axis=1)


def plot_grouped_bars(values: dict[str, np.ndarray], labels: list[str], ylabel: str, title: str, path: Path) -> None:
    """Bars values[method] (L,) side by side for each of the L labels."""
    methods = list(values)
    colors = _colors(methods)
    width = 0.8 / len(methods)
    positions = np.arange(len(labels))
    figure, axes = plt.subplots(figsize=(max(6.4, 0.25 * len(labels) * len(methods) + 2), 4.2))
    for index, name in enumerate(methods):
        axes.bar(
            positions + (index - (len(methods) - 1) / 2) * width, values[name], width, label=name, color=colors[name]
        )
    axes.set_xticks(
        positions,
        labels,
        rotation=45 if max(map(len, labels)) > 4 else 0,
        ha="right" if max(map(len, labels)) > 4 else "center",
    )
    axes.set(ylabel=ylabel, title=title)
    axes.grid(axis="y", alpha=0.3)
    axes.legend()
    save_figure(figure, path)


def plot_stage_times(seconds: dict[str, dict[str, float]], stages: tuple[str, ...], path: Path) -> None:
    """Horizontal bars per method, stacked by stage (seconds[method][stage])."""
    methods = list(seconds)
    figure, axes = plt.subplots(figsize=(7.2, 1.4 + 0.5 * len(methods)))
    left = np.zeros(len(methods))
    for stage, color in zip(stages, plt.cm.Set2.colors, strict=False):
        widths = np.array([seconds[name].get(stage, 0.0) for name in methods])
        axes.barh(methods, widths, left=left, label=stage, color=color)
        left += widths
    for row, total in enumerate(left):
        axes.text(total, row, f" {total:.1f} s", va="center")
    axes.set(xlabel="wall time (s)", title="Wall time per stage", xlim=(0, 1.15 * left.max()))
    axes.invert_yaxis()
    axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    save_figure(figure, path)


def load_display_image(path: Path) -> tuple[np.ndarray, tuple[float, float]]:
    """An RGB image (H, W, 3) shrunk to DISPLAY_SIZE and its scale_xy (original / shown)."""
    bitmap = pycolmap.Bitmap.read(Path(path), True)
    original = (bitmap.width, bitmap.height)
    shown = resized_shape(*original, DISPLAY_SIZE)
    if shown != original:
        bitmap.rescale(*shown, pycolmap.BitmapRescaleFilter.BOX)
    image = bitmap.to_array()
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return image, (original[0] / shown[0], original[1] / shown[1])


def plot_match_pairs(
    image_paths: tuple[Path, Path],
    rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]],
    title: str,
    path: Path,
) -> None:
    """Matches drawn over the two images side by side, one row per method.

    rows: (label, keypoints0 (K, 2), keypoints1 (K, 2), correct (K,) bool or None), keypoints in
    COLMAP corner-origin coordinates of the full-resolution images. Correct matches are drawn
    green and wrong ones red; without `correct` all are drawn green (inliers).
    """
    (image0, scale0), (image1, scale1) = (load_display_image(image_path) for image_path in image_paths)
    height = max(len(image0), len(image1))
    canvas = np.full((height, image0.shape[1] + image1.shape[1], 3), 255, dtype=np.uint8)
    canvas[: len(image0), : image0.shape[1]] = image0
    canvas[: len(image1), image0.shape[1] :] = image1
    aspect = canvas.shape[1] / canvas.shape[0]
    figure, axes_rows = plt.subplots(
        len(rows), 1, figsize=(10, 10 / aspect * len(rows) + 0.4 * len(rows)), squeeze=False
    )
    rng = np.random.default_rng(0)
    for axes, (label, keypoints0, keypoints1, correct) in zip(axes_rows[:, 0], rows, strict=True):
        axes.imshow(canvas)
        axes.set_axis_off()
        shown = rng.permutation(len(keypoints0))[:MAX_LINES]
        # Shown-image pixel centres: shrink in corner-origin coordinates, then shift by half a pixel.
        points0 = colmap_to_pixel(rescale_colmap(keypoints0[shown], (1 / scale0[0], 1 / scale0[1])))
        points1 = colmap_to_pixel(rescale_colmap(keypoints1[shown], (1 / scale1[0], 1 / scale1[1])))
        points1[:, 0] += image0.shape[1]
        good = np.ones(len(shown), bool) if correct is None else correct[shown]
        for mask, color in ((good, "lime"), (~good, "red")):
            axes.plot(
                np.stack([points0[mask, 0], points1[mask, 0]]),
                np.stack([points0[mask, 1], points1[mask, 1]]),
                color=color,
                linewidth=0.7,
                alpha=0.8,
            )
        summary = (
            f"{len(keypoints0)} matches" if correct is None else f"{int(correct.sum())} of {len(keypoints0)} correct"
        )
        axes.set_title(f"{label}: {summary} (showing {len(shown)})", fontsize=10)
    figure.suptitle(title)
    save_figure(figure, path)


def pairs_to_draw(best_counts: dict[Hashable, int], count: int) -> list[Hashable]:
    """`count` keys spread from the hardest to the easiest, by their best count over methods.

    best_counts: key (a pair) -> most inliers (or correct matches) any method found; keys with
    zero are left out, as no method has anything to show there.
    """
    ranked = sorted((key for key, value in best_counts.items() if value > 0), key=lambda key: (best_counts[key], key))
    if len(ranked) <= count:
        return ranked
    return [ranked[round(index)] for index in np.linspace(0, len(ranked) - 1, count)]
