"""`msk` command line: thin wrappers over the pipeline functions.

Exit codes: 0 done; 2 bad arguments or unusable input (one line on stderr, no traceback);
3 done, but some images were skipped (listed in the summary); 130 interrupted.
"""

import argparse
import sys
from pathlib import Path

import pycolmap

from .cli_args import positive_int
from .database import CAMERA_MODES, DatabaseError, open_database
from .extraction import ExtractionConf, FeatureKindMismatchError, extract_features
from .features import BackendUnavailableError, available_methods
from .images import ImageReadError, list_images
from .matchers import MATCHERS
from .matching import MatchingConf, MatchingError, match_features
from .pairs import PairsError, select_pairs
from .pipeline import run
from .reconstruction import MAPPERS, ReconstructionConf, ReconstructionError, reconstruct
from .store import StoreError

EXIT_USAGE = 2
EXIT_SKIPPED = 3
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A problem with what the user asked for, reported as one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    """Reports bad arguments in one `msk: error:` line, like every other usage error."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"msk: error: {message} (see `{self.prog} --help`)\n")


def _image_dir(path: str) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder" if folder.exists() else f"image folder not found: {folder}")
    if not list_images(folder):
        raise UsageError(f"no images in {folder} (looked for .jpg, .png, .tif, ... recursively)")
    return folder


def _existing_database(path: str) -> Path:
    database = Path(path)
    if not database.is_file():
        raise UsageError(f"database not found: {database} (run `msk extract` first)")
    return database


def _add_extraction_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--method", default=ExtractionConf.method, choices=available_methods(), help="feature extractor"
    )
    parser.add_argument(
        "--max-size", type=positive_int, default=ExtractionConf.max_size, help="long image side for extraction"
    )
    parser.add_argument("--max-keypoints", type=positive_int, help="keypoints per image (method default)")
    parser.add_argument(
        "--upright", action="store_true", help="no keypoint orientations: for photos never turned in-plane"
    )
    parser.add_argument("--camera-mode", default="auto", choices=sorted(CAMERA_MODES))
    parser.add_argument("--camera-model", default=ExtractionConf.camera_model, help="COLMAP camera model name")
    parser.add_argument("--overwrite", action="store_true", help="replace features of another kind in the database")


def _add_workers_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers", type=positive_int, help="images or pairs worked on at once (default: one per CPU core, up to 8)"
    )


def _extraction_conf(args: argparse.Namespace) -> ExtractionConf:
    if not hasattr(pycolmap.CameraModelId, args.camera_model):
        raise UsageError(f"unknown camera model '{args.camera_model}'")
    return ExtractionConf(
        method=args.method,
        max_size=args.max_size,
        max_keypoints=args.max_keypoints,
        upright=args.upright,
        camera_mode=args.camera_mode,
        camera_model=args.camera_model,
        overwrite=args.overwrite,
        workers=args.workers,
    )


def _add_matching_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pairs", default="exhaustive", help="exhaustive | sequential[:N] | PAIRS_FILE")
    parser.add_argument("--matcher", default=None, choices=sorted(MATCHERS), help="default: the method's own")


def _add_mapping_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mapper", default="incremental", choices=MAPPERS)
    parser.add_argument(
        "--structure-less-fallback",
        action="store_true",
        help="let the incremental mapper retry images it cannot register from their 2D-2D matches "
        "(COLMAP 4.2's fallback; off by default: with learned matches it can take minutes per image)",
    )


def _mapping_conf(args: argparse.Namespace) -> ReconstructionConf:
    return ReconstructionConf(mapper=args.mapper, structure_less_fallback=args.structure_less_fallback)


def cmd_extract(args: argparse.Namespace) -> int:
    database = Path(args.database)
    features = Path(args.features) if args.features else database.parent / "features.h5"
    summary = extract_features(_image_dir(args.images), database, features, _extraction_conf(args))
    print(summary)
    return EXIT_SKIPPED if summary.skipped else 0


def cmd_match(args: argparse.Namespace) -> int:
    database = _existing_database(args.database)
    features = Path(args.features) if args.features else database.parent / "features.h5"
    matches = Path(args.matches) if args.matches else database.parent / "matches.h5"
    if not features.is_file():
        raise UsageError(f"feature store not found: {features} (run `msk extract` first)")
    with open_database(database) as db:
        pairs = select_pairs(args.pairs, db)
    print(match_features(database, features, matches, pairs, MatchingConf(matcher=args.matcher, workers=args.workers)))
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    model = reconstruct(
        _existing_database(args.database), _image_dir(args.images), Path(args.output), _mapping_conf(args)
    )
    print(model.summary())
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    summary = run(
        _image_dir(args.images),
        Path(args.output),
        _extraction_conf(args),
        args.pairs,
        MatchingConf(matcher=args.matcher, workers=args.workers),
        _mapping_conf(args),
    )
    print(summary)
    print(f"model written to {summary.paths.sparse}")
    return EXIT_SKIPPED if summary.extraction.skipped else 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="msk", description=__doc__.split("\n")[0])
    parser.add_argument("--verbose", action="store_true", help="show COLMAP's own log")
    commands = parser.add_subparsers(dest="command", required=True)

    extract = commands.add_parser("extract", help="extract features of an image folder into a database")
    extract.add_argument("images", help="image folder (searched recursively)")
    extract.add_argument("--database", required=True)
    extract.add_argument("--features", help="HDF5 feature store (default: features.h5 beside the database)")
    _add_extraction_options(extract)
    _add_workers_option(extract)
    extract.set_defaults(func=cmd_extract)

    match = commands.add_parser("match", help="match image pairs and verify them geometrically")
    match.add_argument("--database", required=True)
    match.add_argument("--features", help="HDF5 feature store (default: features.h5 beside the database)")
    match.add_argument("--matches", help="HDF5 match store (default: matches.h5 beside the database)")
    _add_matching_options(match)
    _add_workers_option(match)
    match.set_defaults(func=cmd_match)

    recon = commands.add_parser("reconstruct", help="build a sparse model from a matched database")
    recon.add_argument("--database", required=True)
    recon.add_argument("--images", required=True)
    recon.add_argument("--output", required=True, help="folder for the largest model (COLMAP binary)")
    _add_mapping_options(recon)
    recon.set_defaults(func=cmd_reconstruct)

    run_parser = commands.add_parser("run", help="extract, match and reconstruct in one go")
    run_parser.add_argument("images", help="image folder (searched recursively)")
    run_parser.add_argument("--output", required=True, help="folder for database, feature stores and sparse/")
    _add_extraction_options(run_parser)
    _add_matching_options(run_parser)
    _add_workers_option(run_parser)
    _add_mapping_options(run_parser)
    run_parser.set_defaults(func=cmd_run)

    # Commands of the other packages register themselves (model training, evaluation).
    from msk.data.cli import add_data_commands
    from msk.train.cli import add_show_commands, add_train_commands
    from reconstruction_eval.cli import add_eval_commands

    add_eval_commands(commands)
    add_data_commands(commands)
    add_train_commands(commands)
    add_show_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    pycolmap.logging.minloglevel = 0 if args.verbose else 2  # COLMAP's INFO log is long; keep errors
    try:
        return args.func(args) or 0
    except (
        UsageError,
        PairsError,
        FeatureKindMismatchError,
        StoreError,
        DatabaseError,
        MatchingError,
        ReconstructionError,
        BackendUnavailableError,
        ImageReadError,
    ) as error:
        print(f"msk: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("msk: interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
