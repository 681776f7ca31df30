"""Scene discovery, pair scenes, the split by scene, and the ban on evaluation data."""

from pathlib import Path

import pytest

from colmap_plugin.datasets import datasets_root
from msk.data.scenes import assign_split, check_training_source, discover_scenes


def _scene(root: Path, name: str, images: list[str]) -> None:
    (root / name / "images").mkdir(parents=True)
    for image in images:
        (root / name / "images" / image).write_bytes(b"")


def test_pair_folders_become_one_scene_per_pair(tmp_path):
    _scene(tmp_path, "pairs", ["aA.jpg", "aB.jpg", "bA.png", "bB.png"])
    _scene(tmp_path, "street", ["01.jpg", "02.jpg", "03.jpg"])
    _scene(tmp_path, "mixed", ["xA.jpg", "xB.jpg", "y.jpg"])  # not all paired: one scene
    _scene(tmp_path, "incomplete", ["uA.jpg", "uB.jpg", "vA.jpg"])  # v lacks its B: one scene
    (tmp_path / "notes").mkdir()  # no images/: not a scene
    scenes = {s.name: s.image_names for s in discover_scenes(tmp_path)}
    assert scenes == {
        "incomplete": ("uA.jpg", "uB.jpg", "vA.jpg"),
        "mixed": ("xA.jpg", "xB.jpg", "y.jpg"),
        "pairs:a": ("aA.jpg", "aB.jpg"),
        "pairs:b": ("bA.png", "bB.png"),
        "street": ("01.jpg", "02.jpg", "03.jpg"),
    }


def test_a_folder_with_images_is_itself_a_scene(tmp_path):
    _scene(tmp_path, "one", ["1.jpg", "2.jpg"])
    assert [s.name for s in discover_scenes(tmp_path / "one")] == ["one"]


def test_split_depends_on_the_scene_name_only():
    names = [f"scene{i}" for i in range(4000)]
    splits = [assign_split(n, 0.15) for n in names]
    assert splits == [assign_split(n, 0.15) for n in names]  # deterministic
    assert 0.13 < splits.count("val") / len(names) < 0.17
    assert all(assign_split(n, 0.0) == "train" for n in names[:100])
    # Growing the validation fraction only moves scenes from train to val, never back.
    assert all(assign_split(n, 0.3) == "val" for n, s in zip(names, splits) if s == "val")


@pytest.mark.parametrize("subset", ["eval", "homography", "eval/fountain-P11", "homography/magsac/images"])
def test_evaluation_data_is_refused(subset):
    with pytest.raises(ValueError, match="never used for training"):
        check_training_source(datasets_root() / subset)


def test_a_folder_holding_evaluation_data_is_refused():
    with pytest.raises(ValueError, match="never used for training"):
        check_training_source(datasets_root())


def test_training_data_is_accepted():
    check_training_source(datasets_root() / "train")
    check_training_source(datasets_root() / "train" / "lund")
