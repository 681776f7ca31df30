"""Finding and reading images the way COLMAP does, so sizes and pixels agree with its cameras.

Pixels are used as stored: like COLMAP, EXIF orientation is not applied, so keypoints stay in the
frame of the camera size that COLMAP records for the image.
"""

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pycolmap

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".pgm", ".ppm", ".webp"})

# Decoding needs about one byte per pixel (grey), and a tiny file can declare a huge image.
MAX_PIXELS = 250_000_000

JPEG_SIGNATURE = b"\xff\xd8\xff"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*")
BMP_SIGNATURE = b"BM"
JPEG_END_OF_IMAGE = b"\xff\xd9"
JPEG_START_OF_SCAN = 0xDA
# Start-of-frame markers (they carry the image size); C4, C8 and CC are other segments.
JPEG_START_OF_FRAME = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


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


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a complete JPEG; ImageReadError if it was cut short."""
    size, position = None, 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            raise ImageReadError("corrupt JPEG (broken header segments)")
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if marker in JPEG_START_OF_FRAME and position + 9 <= len(data):
            height = int.from_bytes(data[position + 5 : position + 7], "big")
            size = (int.from_bytes(data[position + 7 : position + 9], "big"), height)
        if marker == JPEG_START_OF_SCAN:
            # Entropy-coded data never contains FF D9, so only a complete file has it after the scan
            # (trailing data such as a motion photo's video may follow it).
            if size is None:
                raise ImageReadError("corrupt JPEG (no frame header)")
            if data.find(JPEG_END_OF_IMAGE, position + 2 + length) < 0:
                raise ImageReadError("truncated JPEG (no end-of-image marker)")
            return size
        position += 2 + length
    raise ImageReadError("truncated JPEG (ends inside its headers)")


def _png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a complete PNG with valid chunk checksums; ImageReadError otherwise."""
    view, size, position = memoryview(data), None, len(PNG_SIGNATURE)
    while position + 12 <= len(data):
        length = int.from_bytes(view[position : position + 4], "big")
        kind = bytes(view[position + 4 : position + 8])
        end = position + 12 + length
        if end > len(data):
            break
        if zlib.crc32(view[position + 4 : end - 4]) != int.from_bytes(view[end - 4 : end], "big"):
            raise ImageReadError(f"corrupt PNG (bad checksum in its {kind.decode('latin-1')} chunk)")
        if kind == b"IHDR":
            width, height = view[position + 8 : position + 12], view[position + 12 : position + 16]
            size = (int.from_bytes(width, "big"), int.from_bytes(height, "big"))
        if kind == b"IEND" and size is not None:
            return size
        position = end
    raise ImageReadError("truncated PNG (no end chunk)")


def _tiff_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a TIFF whose first image's data all lies within the file."""
    order = "little" if data.startswith(b"II") else "big"

    def number(offset: int, size: int) -> int:
        if offset + size > len(data):
            raise ImageReadError("truncated TIFF (ends inside its directory)")
        return int.from_bytes(data[offset : offset + size], order)

    tags: dict[int, list[int]] = {}
    directory = number(4, 4)
    for index in range(number(directory, 2)):
        entry = directory + 2 + 12 * index
        tag, size, count = number(entry, 2), {3: 2, 4: 4}.get(number(entry + 2, 2)), number(entry + 4, 4)
        if size is not None:  # SHORT or LONG values: sizes, strip and tile offsets and lengths
            start = entry + 8 if count * size <= 4 else number(entry + 8, 4)
            tags[tag] = [number(start + size * i, size) for i in range(count)]
    offsets, lengths = tags.get(273) or tags.get(324, []), tags.get(279) or tags.get(325, [])
    if any(offset + length > len(data) for offset, length in zip(offsets, lengths)):
        raise ImageReadError("truncated TIFF (image data missing)")
    if 256 not in tags or 257 not in tags:
        raise ImageReadError("corrupt TIFF (no image size)")
    return tags[256][0], tags[257][0]


def _bmp_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a BMP at least as long as its header says."""
    if len(data) < 26 or int.from_bytes(data[2:6], "little") > len(data):
        raise ImageReadError("truncated BMP")
    if int.from_bytes(data[14:18], "little") == 12:  # OS/2 header: 16-bit sizes
        return int.from_bytes(data[18:20], "little"), int.from_bytes(data[20:22], "little")
    width = int.from_bytes(data[18:22], "little", signed=True)
    return abs(width), abs(int.from_bytes(data[22:26], "little", signed=True))  # negative: top-down


def check_image_file(path: Path) -> None:
    """Refuse JPEG, PNG, TIFF and BMP files that are cut short, damaged or too large to decode.

    COLMAP's reader decodes a truncated file without an error, filling the missing part with
    grey or black, so completeness is checked here first. Other formats are left to it.
    """
    data = Path(path).read_bytes()
    if data.startswith(JPEG_SIGNATURE):
        width, height = _jpeg_size(data)
    elif data.startswith(PNG_SIGNATURE):
        width, height = _png_size(data)
    elif data.startswith(TIFF_SIGNATURES) and int.from_bytes(data[2:4], "little" if data[0] == 0x49 else "big") == 42:
        width, height = _tiff_size(data)  # BigTIFF (43) is left to COLMAP's reader
    elif data.startswith(BMP_SIGNATURE):
        width, height = _bmp_size(data)
    else:
        return
    if width * height > MAX_PIXELS:
        raise ImageReadError(f"too large: {width}x{height} pixels (limit {MAX_PIXELS // 1_000_000} megapixels)")


def read_image(path: Path, max_size: int | None = None) -> LoadedImage:
    """Read an image as grey with COLMAP's own reader and shrink it to `max_size` if larger."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError("file not found")
    if path.stat().st_size == 0:
        raise ImageReadError("empty file")
    check_image_file(path)
    bitmap = pycolmap.Bitmap.read(path, False)
    if bitmap is None or bitmap.width == 0 or bitmap.height == 0:
        raise ImageReadError("not an image, or a format COLMAP cannot read")
    original_size = (bitmap.width, bitmap.height)
    new_width, new_height = resized_shape(*original_size, max_size)
    if (new_width, new_height) != original_size:
        # Area-averaging filter: bilinear shrinking by large factors aliases fine texture.
        bitmap.rescale(new_width, new_height, pycolmap.BitmapRescaleFilter.BOX)
    gray = np.ascontiguousarray(bitmap.to_array())
    if gray.ndim == 3:
        gray = np.ascontiguousarray(gray[..., 0])
    return LoadedImage(gray=gray, original_size=original_size)
