"""Pair selection: exhaustive, sequential and pairs files."""

import pytest

from colmap_plugin.database import import_images, open_database
from colmap_plugin.images import list_images
from colmap_plugin.pairs import PairsError, select_pairs


@pytest.fixture(scope="module")
def database(tmp_path_factory, synthetic_scene):
    path = tmp_path_factory.mktemp("pairs") / "database.db"
    images = synthetic_scene / "images"
    import_images(path, images, list_images(images))
    with open_database(path) as database:
        yield database


def test_exhaustive_pairs_every_image_pair_once(database):
    pairs = select_pairs("exhaustive", database)
    assert len(pairs) == 6 * 5 // 2
    assert len({frozenset(pair) for pair in pairs}) == len(pairs)


def test_sequential_pairs_link_neighbours_only(database):
    pairs = select_pairs("sequential:1", database)
    frame = lambda name: int(name[-10:-4])  # noqa: E731 - camera000001_frame00000K.png
    assert sorted(sorted((frame(a), frame(b))) for a, b in pairs) == [[k, k + 1] for k in range(5)]


def test_pairs_file_with_comments_duplicates_and_reversed_pairs(database, tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text(
        "# hloc-style pairs\n"
        "camera000001_frame000000.png camera000001_frame000001.png\n"
        "camera000001_frame000001.png camera000001_frame000000.png\n\n"
        "camera000001_frame000002.png camera000001_frame000003.png  # close\n"
    )
    assert select_pairs(str(path), database) == [
        ("camera000001_frame000000.png", "camera000001_frame000001.png"),
        ("camera000001_frame000002.png", "camera000001_frame000003.png"),
    ]


@pytest.mark.parametrize(
    "content, message",
    [("a.png camera000001_frame000000.png\n", "not in the database"), ("only_one_name\n", "expected 'name0 name1'")],
)
def test_bad_pairs_files_are_reported(database, tmp_path, content, message):
    path = tmp_path / "pairs.txt"
    path.write_text(content)
    with pytest.raises(PairsError, match=message):
        select_pairs(str(path), database)


@pytest.mark.parametrize("spec", ["sequential:0", "sequential:x", "no-such-file.txt"])
def test_bad_specs_are_reported(database, spec):
    with pytest.raises(PairsError):
        select_pairs(spec, database)
