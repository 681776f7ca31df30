"""Finding and reading images the way COLMAP does, so sizes and pixels agree with its cameras."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pycolmap

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".pgm", ".ppm", ".webp"})


class ImageReadError(RuntimeError):
    """An image that cannot be decoded or used; the message says why."""


@dataclass
class LoadedImage:
    """A grey image ready for extraction and how it maps back to the file's full resolution."""

    gray: np.ndarray  # (H, W) uint8, possibly downscaled
    original_size: tuple[int, int]  # (width, height) of the file, as COLMAP records it

    @property
    def scale_xy(self) -> tuple[float, float]:
        """(original_width / width, original_height / height): multiplies corner-origin coordinates."""
        height, width = self.gray.shape
        return self.original_size[0] / width, self.original_size[1] / height


def list_images(root: Path) -> list[str]:
    """Image files below `root`, recursively, as sorted POSIX paths relative to `root`."""
    root = Path(root)
    return sorted(
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()
    )


def resized_shape(width: int, height: int, max_size: int | None) -> tuple[int, int]:
    """(width, height) after shrinking so the long side is at most `max_size` (never enlarged)."""
    if not max_size or max(width, height) <= max_size:
        return width, height
    factor = max_size / max(width, height)
    return max(1, round(width * factor)), max(1, round(height * factor))


def read_image(path: Path, max_size: int | None = None) -> LoadedImage:
    """Read an image as grey with COLMAP's own reader and shrink it to `max_size` if larger."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError("file not found")
    if path.stat().st_size == 0:
        raise ImageReadError("empty file")
    bitmap = pycolmap.Bitmap.read(path, False)
    if bitmap is None or bitmap.width == 0 or bitmap.height == 0:
        raise ImageReadError("not a readable image (corrupt, truncated or unsupported format)")
    original_size = (bitmap.width, bitmap.height)
    new_width, new_height = resized_shape(*original_size, max_size)
    if (new_width, new_height) != original_size:
        # Area-averaging filter: bilinear shrinking by large factors aliases fine texture.
        bitmap.rescale(new_width, new_height, pycolmap.BitmapRescaleFilter.BOX)
    gray = np.ascontiguousarray(bitmap.to_array())
    if gray.ndim == 3:
        gray = np.ascontiguousarray(gray[..., 0])
    return LoadedImage(gray=gray, original_size=original_size)
