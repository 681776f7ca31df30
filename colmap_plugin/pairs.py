"""Which image pairs to match: exhaustive, sequential[:N] (COLMAP's generators) or a pairs file.

A pairs file has one `name0 name1` per line, as hloc writes them; '#' starts a comment.
"""

from pathlib import Path

import pycolmap

DEFAULT_SEQUENTIAL_OVERLAP = 10


class PairsError(ValueError):
    """A pairs specification or file that cannot be used; the message says why."""


def _generated_pairs(generator: pycolmap.PairGenerator, database: pycolmap.Database) -> list[tuple[str, str]]:
    names = {image.image_id: image.name for image in database.read_all_images()}
    return [(names[id0], names[id1]) for id0, id1 in generator.all_pairs()]


def exhaustive_pairs(database: pycolmap.Database) -> list[tuple[str, str]]:
    """Every pair of images in the database."""
    return _generated_pairs(pycolmap.ExhaustivePairGenerator(pycolmap.ExhaustivePairingOptions(), database), database)


def sequential_pairs(database: pycolmap.Database, overlap: int = DEFAULT_SEQUENTIAL_OVERLAP) -> list[tuple[str, str]]:
    """Each image with the next `overlap` images in name order (and COLMAP's quadratic overlap)."""
    options = pycolmap.SequentialPairingOptions()
    options.overlap = overlap
    return _generated_pairs(pycolmap.SequentialPairGenerator(options, database), database)


def read_pairs_file(path: Path) -> list[tuple[str, str]]:
    """Pairs listed in a text file, one `name0 name1` per line."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise PairsError(f"cannot read pairs file {path}: {error}") from error
    pairs = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 2:
            raise PairsError(f"{path}:{number}: expected 'name0 name1', got {line!r}")
        pairs.append((fields[0], fields[1]))
    return pairs


def unique_pairs(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Pairs without self-pairs and without (b, a) when (a, b) came first, order kept."""
    seen: set[frozenset[str]] = set()
    kept = []
    for name0, name1 in pairs:
        key = frozenset((name0, name1))
        if name0 != name1 and key not in seen:
            seen.add(key)
            kept.append((name0, name1))
    return kept


def select_pairs(spec: str, database: pycolmap.Database) -> list[tuple[str, str]]:
    """Pairs for `spec`: 'exhaustive', 'sequential', 'sequential:N' or the path of a pairs file."""
    if spec == "exhaustive":
        pairs = exhaustive_pairs(database)
    elif spec == "sequential" or spec.startswith("sequential:"):
        overlap_text = spec.partition(":")[2] or str(DEFAULT_SEQUENTIAL_OVERLAP)
        if not overlap_text.isdigit() or int(overlap_text) < 1:
            raise PairsError(f"sequential overlap must be a positive integer, got {overlap_text!r}")
        pairs = sequential_pairs(database, int(overlap_text))
    elif Path(spec).is_file():
        pairs = read_pairs_file(Path(spec))
        known = {image.name for image in database.read_all_images()}
        unknown = sorted({name for pair in pairs for name in pair} - known)
        if unknown:
            raise PairsError(f"pairs file {spec} names {len(unknown)} images not in the database, e.g. {unknown[0]!r}")
    else:
        raise PairsError(f"pairs must be 'exhaustive', 'sequential[:N]' or an existing pairs file, got {spec!r}")
    return unique_pairs(pairs)


def write_pairs_file(pairs: list[tuple[str, str]], path: Path) -> None:
    Path(path).write_text("".join(f"{name0} {name1}\n" for name0, name1 in pairs))
