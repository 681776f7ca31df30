"""Which scenes a folder holds, which split each belongs to, and which folders may never be used.

A scene is a folder with `images/`. A folder whose images all come in `<name>A.*` / `<name>B.*`
pairs (e.g. `kusvod2_pairs`) is a collection of unrelated two-view scenes, one per pair: its
pairs share no content, so reconstructing the folder as one scene would fail or, worse, merge
them. Each pair becomes the scene `<folder>:<name>`.
"""

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from colmap_plugin.datasets import datasets_root

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".ppm", ".pgm"}
# The evaluation data must never reach training, whatever path it is reached by.
FORBIDDEN_SUBSETS = ("eval", "homography")
PAIR_SEPARATOR = ":"
_PAIR_NAME = re.compile(r"^(?P<pair>.+)(?P<side>[AB])$")


@dataclass(frozen=True)
class Scene:
    name: str  # unique id, also the HDF5 group and cache folder name
    root: Path  # the scene folder (the one holding `images/`)
    image_names: tuple[str, ...]  # relative to `root / "images"`, sorted

    @property
    def image_dir(self) -> Path:
        return self.root / "images"


def list_images(image_dir: Path) -> list[str]:
    return sorted(p.name for p in image_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def split_pairs(image_names: list[str]) -> dict[str, tuple[str, str]] | None:
    """`{pair: (A, B)}` if every image is one side of a complete A/B pair, else None."""
    sides: dict[str, dict[str, str]] = {}
    for name in image_names:
        match = _PAIR_NAME.match(Path(name).stem)
        if match is None:
            return None
        sides.setdefault(match["pair"], {})[match["side"]] = name
    if len(sides) < 2 or any(len(s) != 2 for s in sides.values()):
        return None
    return {pair: (s["A"], s["B"]) for pair, s in sorted(sides.items())}


def _scenes_in(folder: Path) -> list[Scene]:
    names = list_images(folder / "images")
    pairs = split_pairs(names)
    if pairs is None:
        return [Scene(folder.name, folder, tuple(names))] if names else []
    return [Scene(f"{folder.name}{PAIR_SEPARATOR}{p}", folder, ab) for p, ab in pairs.items()]


def check_training_source(path: Path) -> None:
    """Refuse a folder that is, is inside, or contains the evaluation-only datasets."""
    path = path.resolve()
    for subset in FORBIDDEN_SUBSETS:
        forbidden = (datasets_root() / subset).resolve()
        if path == forbidden or forbidden in path.parents or path in forbidden.parents:
            raise ValueError(f"{path} overlaps {forbidden}: evaluation data is never used for training")


def discover_scenes(scenes_dir: Path) -> list[Scene]:
    """All scenes under `scenes_dir` (itself a scene if it has `images/`), sorted by name."""
    scenes_dir = Path(scenes_dir)
    check_training_source(scenes_dir)
    if (scenes_dir / "images").is_dir():
        return _scenes_in(scenes_dir)
    folders = sorted(p for p in scenes_dir.iterdir() if (p / "images").is_dir())
    return [scene for folder in folders for scene in _scenes_in(folder)]


def assign_split(scene_name: str, val_fraction: float) -> str:
    """'val' or 'train' from a hash of the name alone.

    A scene keeps its split when other scenes are added or removed, and both images of a pair
    follow their pair because the pair is the scene.
    """
    digest = hashlib.sha256(scene_name.encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "val" if u < val_fraction else "train"
