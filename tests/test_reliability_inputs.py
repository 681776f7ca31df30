"""Bad and unusual image files, generated here: each is extracted or skipped with one clear line,
the batch finishes, and a skipped image leaves nothing behind in the database or the feature store.
"""

import io
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image
from test_reliability_interrupts import database_content, store_content

from colmap_plugin.cli import main
from colmap_plugin.database import image_ids_by_name, open_database
from colmap_plugin.images import PNG_SIGNATURE
from colmap_plugin.store import FeatureStore

EXTRACTED = "extracted"


def texture(height: int, width: int, seed: int = 0, block: int = 8) -> np.ndarray:
    """A grey image of random square blocks: plenty of SIFT keypoints."""
    shape = (height // block + 1, width // block + 1)
    blocks = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    return np.repeat(np.repeat(blocks, block, axis=0), block, axis=1)[:height, :width]


def colour(height: int = 480, width: int = 640) -> np.ndarray:
    return np.stack([texture(height, width, seed) for seed in range(3)], axis=-1)


def encoded(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def jpeg(**options) -> bytes:
    return encoded(Image.fromarray(colour()), "JPEG", quality=92, **options)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_declaring(width: int, height: int) -> bytes:
    """A small, well-formed PNG that declares a huge grey image (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\0" * (width + 1) * 16)  # only the first rows: it is never decoded
    return PNG_SIGNATURE + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", pixels) + png_chunk(b"IEND", b"")


def damaged_scan(data: bytes) -> bytes:
    """A JPEG whose compressed pixel data is overwritten in the middle (no marker bytes)."""
    middle = len(data) // 2
    return data[:middle] + b"\x55" * 200 + data[middle + 200 :]


def flipped_checksum(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


def with_exif_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encoded(Image.fromarray(colour()), "JPEG", quality=92, exif=exif.tobytes())


def tiff(image: Image.Image, **options) -> bytes:
    return encoded(image, "TIFF", **options)


def half(data: bytes) -> bytes:
    return data[: len(data) // 2]


gray8 = Image.fromarray(texture(480, 640))
gray16 = Image.fromarray(texture(480, 640).astype(np.uint16) * 257)
rgb = Image.fromarray(colour())

# file name -> (its bytes, what extraction does with it: EXTRACTED or the skip reason's start)
INPUTS = {
    "empty.jpg": (lambda: b"", "empty file"),
    "text.jpg": (lambda: b"<html>404 not found</html>", "not an image"),
    "truncated.jpg": (lambda: half(jpeg()), "truncated JPEG"),
    "truncated_progressive.jpg": (lambda: half(jpeg(progressive=True)), "truncated JPEG"),
    "header_only.jpg": (lambda: jpeg()[:300], "truncated JPEG"),
    "truncated.png": (lambda: half(encoded(rgb, "PNG")), "truncated PNG"),
    "bad_checksum.png": (lambda: flipped_checksum(encoded(rgb, "PNG")), "corrupt PNG"),
    "truncated_lzw.tif": (lambda: half(tiff(rgb, compression="tiff_lzw")), "truncated TIFF"),
    "truncated.bmp": (lambda: half(encoded(rgb, "BMP")), "truncated BMP"),
    "bomb.png": (lambda: png_declaring(30000, 30000), "too large"),
    "image.webp": (lambda: encoded(rgb, "WEBP"), "not an image, or a format COLMAP cannot read"),
    "blank.png": (lambda: encoded(Image.new("L", (640, 480), 128), "PNG"), "no keypoints"),
    "one_pixel.png": (lambda: encoded(Image.new("L", (1, 1), 0), "PNG"), "no keypoints"),
    "tiny_flat.png": (lambda: encoded(Image.new("L", (16, 16), 200), "PNG"), "no keypoints"),
    "tiny.png": (lambda: encoded(Image.fromarray(texture(16, 16, block=4)), "PNG"), EXTRACTED),
    "gray8.png": (lambda: encoded(gray8, "PNG"), EXTRACTED),
    "gray16.png": (lambda: encoded(gray16, "PNG"), EXTRACTED),
    "gray16.tif": (lambda: tiff(gray16), EXTRACTED),
    "lzw.tif": (lambda: tiff(rgb, compression="tiff_lzw"), EXTRACTED),
    "rgb.bmp": (lambda: encoded(rgb, "BMP"), EXTRACTED),
    "rgba.png": (lambda: encoded(Image.fromarray(np.dstack([colour(), texture(480, 640, 9)])), "PNG"), EXTRACTED),
    "palette.png": (lambda: encoded(rgb.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"), EXTRACTED),
    "cmyk.jpg": (lambda: encoded(rgb.convert("CMYK"), "JPEG", quality=92), EXTRACTED),
    "exif_rotated.jpg": (lambda: with_exif_orientation(6), EXTRACTED),
    "damaged_scan.jpg": (lambda: damaged_scan(jpeg()), EXTRACTED),  # decodes with visible damage, as anywhere
    "motion_photo.jpg": (lambda: jpeg() + b"\0\0\0\x18ftypmp42" + bytes(5000), EXTRACTED),  # video after the JPEG
    "UPPER.JPG": (lambda: jpeg(), EXTRACTED),
    "sub/dir/nested.jpg": (lambda: jpeg(), EXTRACTED),
}
HUGE = "huge_12000x9000.jpg"


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> dict:
    """One `msk extract` over every input above and a 12000x9000 photo: exit code, output, files."""
    root = tmp_path_factory.mktemp("bad_inputs")
    images = root / "images"
    for name, (make, _) in INPUTS.items():
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        (images / name).write_bytes(make())
    Image.fromarray(texture(9000, 12000)).save(images / HUGE, quality=90)
    (images / "folder.jpg").mkdir()  # not a file: not an image either
    output = root / "out"
    argv = ["extract", str(images), "--database", str(output / "database.db"), "--max-size", "1600"]
    result = subprocess.run([sys.executable, "-m", "colmap_plugin.cli", *argv], capture_output=True, text=True)
    return {"images": images, "output": output, "argv": argv, "result": result}


def test_batch_finishes_and_exit_code_says_images_were_skipped(batch):
    result = batch["result"]
    assert result.returncode == 3, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    skipped = sorted(name for name, (_, outcome) in INPUTS.items() if outcome != EXTRACTED)
    extracted = len(INPUTS) - len(skipped) + 1  # and the huge one
    assert f"extracted {extracted} images, 0 already done, {len(skipped)} skipped" in result.stdout
    summary = result.stdout[result.stdout.index(f"extracted {extracted} images") :]
    assert [line.split(":")[0] for line in summary.splitlines()[1:]] == [f"  skipped {name}" for name in skipped]


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_each_input_is_extracted_or_skipped_without_trace(batch, name):
    outcome = INPUTS[name][1]
    lines = [line for line in batch["result"].stdout.splitlines() if line.startswith(f"skipped {name}: ")]
    with (
        open_database(batch["output"] / "database.db") as database,
        FeatureStore(batch["output"] / "features.h5", writable=False) as store,
    ):
        ids = image_ids_by_name(database)
        if outcome == EXTRACTED:
            assert not lines
            assert name in store and store.num_keypoints(name) > 0
            assert database.num_keypoints_for_image(ids[name]) == store.num_keypoints(name)
        else:
            assert len(lines) == 1 and lines[0].startswith(f"skipped {name}: {outcome}"), lines
            assert name not in ids and name not in store


def test_huge_image_is_downscaled_and_keypoints_reported_at_full_resolution(batch):
    with (
        open_database(batch["output"] / "database.db") as database,
        FeatureStore(batch["output"] / "features.h5", writable=False) as store,
    ):
        camera = database.read_camera(database.read_image_with_name(HUGE).camera_id)
        keypoints = store.read(HUGE).keypoints
        assert (camera.width, camera.height) == store.image_size(HUGE) == (12000, 9000)
    assert len(keypoints) > 1000
    assert keypoints.min() >= 0 and keypoints[:, 0].max() <= 12000 and keypoints[:, 1].max() <= 9000
    assert keypoints[:, 0].max() > 11000 and keypoints[:, 1].max() > 8000  # spread over the whole photo


def test_huge_image_is_read_in_bounded_memory(batch):
    """Peak memory of reading a 108-megapixel JPEG stays near one grey copy of it (2 bytes a pixel)."""
    script = (
        "import resource, sys\n"
        "from colmap_plugin.images import read_image\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "image = read_image(sys.argv[1], 1600)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(batch["images"] / HUGE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) < 2.5 * 12000 * 9000


def test_exif_orientation_is_ignored_like_colmap(batch):
    """COLMAP does not rotate by EXIF: the camera keeps the stored size and keypoints stay in it."""
    with open_database(batch["output"] / "database.db") as database:
        camera = database.read_camera(database.read_image_with_name("exif_rotated.jpg").camera_id)
    assert (camera.width, camera.height) == (640, 480)


def test_rerun_retries_only_the_skipped_and_changes_nothing(batch, capsys):
    output = batch["output"]
    before = database_content(output / "database.db"), store_content(output / "features.h5")
    assert main(batch["argv"]) == 3
    skipped = sum(outcome != EXTRACTED for _, outcome in INPUTS.values())
    assert f"extracted 0 images, {len(INPUTS) - skipped + 1} already done, {skipped} skipped" in capsys.readouterr().out
    assert (database_content(output / "database.db"), store_content(output / "features.h5")) == before


def test_image_of_another_size_with_a_single_camera_is_skipped(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for seed in range(2):
        Image.fromarray(texture(480, 640, seed)).save(images / f"a{seed}.png")
    Image.fromarray(texture(240, 320, 5)).save(images / "small.png")
    output = tmp_path / "out"
    argv = ["extract", str(images), "--database", str(output / "database.db"), "--camera-mode", "single"]
    assert main(argv) == 3
    assert "skipped small.png: COLMAP did not import it: its size differs" in capsys.readouterr().out
    with (
        open_database(output / "database.db") as database,
        FeatureStore(output / "features.h5", writable=False) as store,
    ):
        assert set(image_ids_by_name(database)) == {"a0.png", "a1.png"} and database.num_cameras() == 1
        assert "small.png" not in store
