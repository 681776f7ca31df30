"""Extract, match and reconstruct an image folder in one go: `msk run`."""

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pycolmap

from .database import open_database
from .errors import MismatchError
from .extraction import ExtractionConf, ExtractionSummary, extract_features
from .matching import MatchingConf, MatchingSummary, match_features
from .pairs import select_pairs
from .reconstruction import ReconstructionConf, reconstruct


@dataclass
class RunPaths:
    """Where `msk run` keeps its files inside the output folder."""

    output: Path

    @property
    def database(self) -> Path:
        return self.output / "database.db"

    @property
    def features(self) -> Path:
        return self.output / "features.h5"

    @property
    def matches(self) -> Path:
        return self.output / "matches.h5"

    @property
    def sparse(self) -> Path:
        return self.output / "sparse"


@dataclass
class RunSummary:
    extraction: ExtractionSummary
    matching: MatchingSummary
    model: pycolmap.Reconstruction
    seconds_map: float
    paths: RunPaths = field(repr=False)

    def __str__(self) -> str:
        return "\n".join(
            [str(self.extraction), str(self.matching), f"mapping took {self.seconds_map:.1f} s", self.model.summary()]
        )


def run(
    image_dir: Path,
    output_dir: Path,
    extraction: ExtractionConf = ExtractionConf(),
    pairs_spec: str = "exhaustive",
    matching: MatchingConf | None = None,
    mapping: ReconstructionConf = ReconstructionConf(),
) -> RunSummary:
    paths = RunPaths(Path(output_dir))
    try:
        extraction_summary = extract_features(image_dir, paths.database, paths.features, extraction)
    except MismatchError as error:  # the hints name `msk extract`'s --database and --features, which run has not
        hint = "run again with --overwrite to extract again, or use another --output"
        raise type(error)(error.mismatch, hint) from None
    with open_database(paths.database) as database:
        pairs = select_pairs(pairs_spec, database)
    # The output folder is run's own: matches of another matcher or version are out of date, not someone's results.
    matching = replace(matching or MatchingConf(), replace_other_matches=True)
    matching_summary = match_features(paths.database, paths.features, paths.matches, pairs, matching)
    start = time.perf_counter()
    model = reconstruct(paths.database, image_dir, paths.sparse, mapping)
    return RunSummary(extraction_summary, matching_summary, model, time.perf_counter() - start, paths)
