"""`msk compare` and `msk bench {homography,scenes}`: thin wrappers over the evaluation functions.

`add_eval_commands` registers them on the `msk` parser's sub-commands; each handler returns
an exit code: 0 done, 2 unusable input (one line on stderr).
"""

import argparse
import json
import sys
from pathlib import Path

from colmap_plugin.cli_args import positive_int
from colmap_plugin.database import CAMERA_MODES
from colmap_plugin.features import available_methods
from colmap_plugin.pairs import PairsError
from colmap_plugin.reconstruction import MAPPERS

from .compare import TABLE_ROWS, CompareConf, GroundTruthError, compare
from .false_pairs import FalsePairsConf, bench_false_pairs, false_pairs_table
from .homography_bench import TABLE_ROWS as HOMOGRAPHY_ROWS
from .homography_bench import HomographyBenchConf, bench_homography
from .report import metrics_by_method_table
from .rotation_bench import RotationBenchConf, bench_rotation, rotation_table
from .runs import KnownCamerasError, RunConf
from .scenes import bench_scenes, summary_table
from .speed import SpeedConf, bench_speed

EXIT_USAGE = 2


def method_list(text: str) -> list[str]:
    """`--methods a,b`: plugin methods, each one available."""
    methods = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in methods if name not in available_methods()]
    if unknown or not methods:
        raise argparse.ArgumentTypeError(
            f"unknown method(s) {', '.join(unknown) or '(none given)'}; available: {', '.join(available_methods())}"
        )
    return methods


def _folder(path: str, what: str) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} not found: {folder}")
    return folder


def _gt_model(path: str | None) -> Path | None:
    if path is None:
        return None
    folder = _folder(path, "ground-truth model folder")
    if not any((folder / f"images.{ext}").is_file() for ext in ("txt", "bin")):
        raise FileNotFoundError(f"no COLMAP model (images.txt or images.bin) in {folder}")
    return folder


def _add_common_options(parser: argparse.ArgumentParser, reconstruction: bool) -> None:
    parser.add_argument("--output", required=True, help="folder for report.json, report.md and figures")
    parser.add_argument(
        "--methods",
        type=method_list,
        default=None,
        help=f"comma-separated plugin methods (default: all of {','.join(available_methods())})",
    )
    parser.add_argument(
        "--max-size", type=positive_int, default=RunConf.max_size, help="long image side for extraction"
    )
    if reconstruction:
        parser.add_argument(
            "--max-keypoints",
            type=positive_int,
            help="keypoints per image of the plugin methods (default: each method's)",
        )
        parser.add_argument("--pairs", default=RunConf.pairs, help="exhaustive | sequential[:N] | PAIRS_FILE")
        parser.add_argument("--mapper", default=RunConf.mapper, choices=MAPPERS)
        parser.add_argument(
            "--camera-mode",
            default=RunConf.camera_mode,
            choices=list(CAMERA_MODES),
            help="how images share cameras, for every method (single: one camera for all images)",
        )
    parser.add_argument("--json", action="store_true", help="print report.json instead of the table")


def _compare_conf(args: argparse.Namespace) -> CompareConf:
    run = RunConf(
        max_size=args.max_size,
        max_keypoints=args.max_keypoints,
        pairs=args.pairs,
        mapper=args.mapper,
        camera_mode=args.camera_mode,
    )
    return CompareConf(methods=args.methods, run=run, gt_intrinsics=args.gt_intrinsics)


def _add_gt_intrinsics_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gt-intrinsics",
        action="store_true",
        help="every method uses the ground truth's cameras and keeps them fixed: only poses are estimated",
    )


def _handle_errors(handler):
    """Unusable input ends with one line on stderr and exit code 2, as in the other commands."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (FileNotFoundError, GroundTruthError, KnownCamerasError, PairsError) as error:
            print(f"msk: error: {error}", file=sys.stderr)
            return EXIT_USAGE

    return wrapped


def _print_report(report: dict, table: str, args: argparse.Namespace) -> int:
    """`--json`: the whole report; otherwise its table and where report.md is."""
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(table)
        print(f"report written to {Path(args.output) / 'report.md'}")
    return 0


@_handle_errors
def cmd_compare(args: argparse.Namespace) -> int:
    report = compare(_folder(args.images, "image folder"), Path(args.output), _gt_model(args.gt), _compare_conf(args))
    return _print_report(report, metrics_by_method_table(report["methods"], TABLE_ROWS), args)


@_handle_errors
def cmd_bench_homography(args: argparse.Namespace) -> int:
    conf = HomographyBenchConf(methods=args.methods, max_size=args.max_size, max_keypoints=args.max_keypoints)
    report = bench_homography(_folder(args.dataset, "dataset folder"), Path(args.output), conf)
    return _print_report(report, metrics_by_method_table(report["methods"], HOMOGRAPHY_ROWS), args)


def number_list(convert, what: str, minimum: float | None = None):
    """An argparse type for comma-separated numbers (`--angles 0,45,90`), at least one, none below `minimum`."""

    def parse(text: str) -> tuple:
        try:
            values = tuple(convert(value) for value in text.split(",") if value.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be comma-separated numbers, got '{text}'") from None
        if not values or (minimum is not None and min(values) < minimum):
            bound = "" if minimum is None else f" of at least {minimum}"
            raise argparse.ArgumentTypeError(f"expected one or more {what}{bound}, got '{text}'")
        return values

    return parse


budget_list = number_list(int, "keypoint budgets", minimum=1)
angle_list = number_list(float, "angles (degrees)")


@_handle_errors
def cmd_bench_rotation(args: argparse.Namespace) -> int:
    homography = HomographyBenchConf(max_size=args.max_size, max_keypoints=args.max_keypoints)
    report = bench_rotation(
        _folder(args.dataset, "dataset folder"),
        Path(args.output),
        RotationBenchConf(args.angles, homography=homography),
    )
    return _print_report(report, rotation_table(report), args)


@_handle_errors
def cmd_bench_scenes(args: argparse.Namespace) -> int:
    summary = bench_scenes(_folder(args.scenes, "scenes folder"), Path(args.output), _compare_conf(args))
    return _print_report(summary, summary_table(summary["scenes"]), args)


@_handle_errors
def cmd_bench_false_pairs(args: argparse.Namespace) -> int:
    run = RunConf(
        max_size=args.max_size, max_keypoints=args.max_keypoints, mapper=args.mapper, camera_mode=args.camera_mode
    )
    conf = FalsePairsConf(methods=args.methods, max_images=args.max_images, run=run)
    scenes = (_folder(args.scene_a, "image folder"), _folder(args.scene_b, "image folder"))
    report = bench_false_pairs(*scenes, Path(args.output), conf)
    return _print_report(report, false_pairs_table(report), args)


@_handle_errors
def cmd_bench_speed(args: argparse.Namespace) -> int:
    conf = SpeedConf(max_size=args.max_size, max_images=args.max_images, keypoint_budgets=args.max_keypoints)
    report = bench_speed(_folder(args.images, "image folder"), args.methods or available_methods(), conf)
    Path(args.output).mkdir(parents=True, exist_ok=True)
    (Path(args.output) / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, row in report["methods"].items():
            extra = f", {row['keypoints_per_image']:.0f} keypoints" if "keypoints_per_image" in row else ""
            if "folder_seconds_per_image" in row:
                extra += f"; a folder on all cores: {row['folder_seconds_per_image']:.2f} s per image"
            print(f"{name:12s} {row['seconds_per_image']:.2f} s per image{extra}")
    return 0


def add_eval_commands(commands: argparse._SubParsersAction) -> None:
    """Register `compare` and `bench` on the sub-commands of the `msk` parser."""
    compare_parser = commands.add_parser(
        "compare", help="COLMAP's SIFT and plugin methods on the same images, side by side"
    )
    compare_parser.add_argument("images", help="image folder (searched recursively)")
    compare_parser.add_argument("--gt", help="ground-truth COLMAP model folder (images matched by name)")
    _add_common_options(compare_parser, reconstruction=True)
    _add_gt_intrinsics_option(compare_parser)
    compare_parser.set_defaults(func=cmd_compare)

    bench = commands.add_parser("bench", help="benchmarks over a dataset folder")
    benchmarks = bench.add_subparsers(dest="benchmark", required=True)
    homography = benchmarks.add_parser(
        "homography", help="keypoints and matches on planar pairs with known homographies"
    )
    homography.add_argument("dataset", help="folder with images/{name}A.*, images/{name}B.*, gt/{name}_H_AtoB.txt")
    homography.add_argument(
        "--max-keypoints",
        type=positive_int,
        default=HomographyBenchConf.max_keypoints,
        help="keypoint budget, the same for every method",
    )
    _add_common_options(homography, reconstruction=False)
    homography.set_defaults(func=cmd_bench_homography)

    rotation = benchmarks.add_parser(
        "rotation", help="upright vs oriented keypoints: planar pairs with the second image turned in-plane"
    )
    rotation.add_argument("dataset", help="homography dataset folder (as for `bench homography`)")
    rotation.add_argument("--output", required=True, help="folder for report.json, report.md, figure and images")
    rotation.add_argument("--angles", type=angle_list, default=RotationBenchConf.angles, help="degrees, e.g. 0,45,90")
    rotation.add_argument("--max-keypoints", type=positive_int, default=HomographyBenchConf.max_keypoints)
    rotation.add_argument("--max-size", type=positive_int, default=HomographyBenchConf.max_size)
    rotation.add_argument("--json", action="store_true", help="print report.json instead of the table")
    rotation.set_defaults(func=cmd_bench_rotation)

    scenes = benchmarks.add_parser("scenes", help="`compare` on every scene (sub-folder with images/, optional gt/)")
    scenes.add_argument("scenes", help="folder of scenes")
    _add_common_options(scenes, reconstruction=True)
    _add_gt_intrinsics_option(scenes)
    scenes.set_defaults(func=cmd_bench_scenes)

    false_pairs = benchmarks.add_parser(
        "false-pairs", help="two scenes mixed in one folder: how many pairs across them pass verification"
    )
    false_pairs.add_argument("scene_a", help="image folder of one scene")
    false_pairs.add_argument("scene_b", help="image folder of another scene (no view overlaps scene a)")
    false_pairs.add_argument("--max-images", type=positive_int, default=FalsePairsConf.max_images, help="per scene")
    _add_common_options(false_pairs, reconstruction=True)
    false_pairs.set_defaults(func=cmd_bench_false_pairs)

    speed = benchmarks.add_parser("speed", help="extraction time per image: COLMAP's SIFT and each method, one run")
    speed.add_argument("images", help="image folder")
    speed.add_argument("--max-images", type=positive_int, default=SpeedConf.max_images)
    speed.add_argument(
        "--max-keypoints",
        type=budget_list,
        default=SpeedConf.keypoint_budgets,
        help="keypoint budgets of the plugin methods, e.g. 4096,8192 (default: each method's own)",
    )
    _add_common_options(speed, reconstruction=False)
    speed.set_defaults(func=cmd_bench_speed)
