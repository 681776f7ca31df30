"""`msk data build` and `msk data show`: thin wrappers over build.build_dataset and show.show_dataset.

`add_data_commands(subparsers)` registers `data build|show` on the `msk` parser; every command
stores its handler as `func`, to be called with the parsed arguments. `python -m msk.data.cli
build|show ...` runs the same commands on their own.
"""

import argparse
import logging
import time
from pathlib import Path

import pycolmap

from colmap_plugin.cli_args import existing_file, existing_folder, fraction, positive_int, thread_count

from ..descriptor import check_patch_size
from .build import BuildConf, build_dataset, format_summary
from .patches import PatchConf
from .sfm import SfmConf
from .show import show_dataset
from .targets import SampleConf


def patch_side(text: str) -> int:
    """A patch side the descriptor network can be trained on, checked before a build of several minutes."""
    try:
        return check_patch_size(positive_int(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _run_build(args: argparse.Namespace) -> None:
    conf = BuildConf(
        sfm=SfmConf(max_image_size=args.max_image_size, num_threads=args.num_threads),
        patch=PatchConf(patch_size=args.patch_size),
        sample=SampleConf(max_points_per_scene=args.max_points, max_views_per_point=args.max_views),
        val_fraction=args.val_fraction,
        seed=args.seed,
    )
    start = time.perf_counter()
    summary = build_dataset(args.scenes_dir, args.output, conf, work_dir=args.work_dir, only=args.scenes)
    print(format_summary(summary))
    size_mb = args.output.stat().st_size / 2**20
    print(f"wrote {args.output} ({size_mb:.1f} MB) in {time.perf_counter() - start:.0f} s")


def _run_show(args: argparse.Namespace) -> None:
    show_dataset(args.dataset, args.output, split=args.split, num_tracks=args.tracks, seed=args.seed)
    print(f"wrote {args.output}")


def _add_build(subparsers) -> None:
    sfm, sample = SfmConf(), SampleConf()
    p = subparsers.add_parser("build", help="build the self-supervised training set (HDF5) from a folder of scenes")
    p.add_argument("scenes_dir", type=existing_folder, help="folder of scenes, each a folder with images/")
    p.add_argument("--output", type=Path, required=True, help="DATASET.h5 to write")
    p.add_argument(
        "--work-dir",
        type=Path,
        help="reconstructions (sfm/<scene>/) and per-scene shards (shards/); default: <output stem>_work/. "
        "An existing reconstruction is reused from <scene>/{database.db,sparse/} or <work-dir>/sfm/<scene>/",
    )
    p.add_argument("--scenes", nargs="+", help="only these scene names")
    p.add_argument("--max-image-size", type=positive_int, default=sfm.max_image_size, help="SIFT image size")
    p.add_argument(
        "--num-threads",
        type=thread_count,
        default=sfm.num_threads,
        help="COLMAP extraction and matching threads (-1: all cores; the mapper uses one, for a reproducible model)",
    )
    p.add_argument("--patch-size", type=patch_side, default=PatchConf().patch_size, help="pixels, a multiple of 4")
    p.add_argument("--max-points", type=positive_int, default=sample.max_points_per_scene, help="tracks kept per scene")
    p.add_argument("--max-views", type=positive_int, default=sample.max_views_per_point, help="patches kept per track")
    p.add_argument("--val-fraction", type=fraction, default=BuildConf().val_fraction)
    p.add_argument("--seed", type=int, default=BuildConf().seed)
    p.set_defaults(func=_run_build)


def _add_show(subparsers) -> None:
    p = subparsers.add_parser("show", help="PNG of random tracks and detector samples, to check a dataset by eye")
    p.add_argument("dataset", type=existing_file, help="DATASET.h5")
    p.add_argument("--output", type=Path, required=True, help="PNG to write")
    p.add_argument("--split", choices=["train", "val", "all"], default="all")
    p.add_argument("--tracks", type=positive_int, default=12, help="tracks to show, one per row")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run_show)


def add_data_commands(subparsers) -> None:
    """Register `data build` and `data show` on an argparse subparsers object."""
    data = subparsers.add_parser("data", help="training data from structure-from-motion")
    commands = data.add_subparsers(dest="data_command", required=True)
    _add_build(commands)
    _add_show(commands)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m msk.data.cli", description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="keep COLMAP's log")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_build(commands)
    _add_show(commands)
    args = parser.parse_args(argv)
    pycolmap.logging.minloglevel = 0 if args.verbose else 2  # COLMAP's INFO lines would bury the progress
    args.func(args)


if __name__ == "__main__":
    main()
