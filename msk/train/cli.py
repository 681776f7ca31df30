"""`msk train descriptor|matcher`: thin wrappers over the training functions.

Both are seeded and run on the CPU; by default they overwrite the weights shipped in the package.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from colmap_plugin.cli_args import existing_file, existing_folder, positive_float, positive_int
from colmap_plugin.datasets import datasets_root
from msk.detector import DetectorConf
from msk.visualize import show_keypoints
from msk.weights import DESCRIPTOR_WEIGHTS, DETECTOR_WEIGHTS, MATCH_DECISION_WEIGHTS
from reconstruction_eval.plots import plot_curves

from .descriptor import DescriptorTrainConf, train_descriptor
from .detector import DetectorTrainConf, train_detector
from .matcher import MatcherTrainConf, train_matcher


def _run_descriptor(args: argparse.Namespace) -> int:
    conf = DescriptorTrainConf(
        steps=args.steps,
        batch_tracks=args.batch_tracks,
        channels=tuple(args.channels),
        seed=args.seed,
        num_threads=args.num_threads,
    )
    meta = train_descriptor(args.dataset, args.output, conf)
    print(f"val FPR95 {100 * meta['val_fpr95']:.2f}% (SIFT {100 * meta['val_fpr95_sift']:.2f}%); wrote {args.output}")
    return 0


def _run_matcher(args: argparse.Namespace) -> int:
    conf = MatcherTrainConf(epochs=args.epochs, seed=args.seed, num_threads=args.num_threads)
    meta = train_matcher(args.dataset, args.scenes, args.output, conf, descriptor_weights=args.descriptor)
    report = meta["validation"]
    if args.plot:
        curves = {
            name: (np.array([100 * p["recall"] for p in curve]), np.array([100 * p["precision"] for p in curve]))
            for name, curve in report["curves"].items()
        }
        plot_curves(curves, "recall (%)", "precision (%)", "Match decisions on held-out scenes", args.plot)
    print(
        json.dumps(
            {
                "threshold": meta["threshold"],
                "at_threshold": report["learned_at_threshold"],
                "false_pair_matches_per_pair": report["false_pair_matches_per_pair"],
            },
            indent=2,
        )
    )
    print(f"wrote {args.output}")
    return 0


def _run_detector(args: argparse.Namespace) -> int:
    conf = DetectorTrainConf(steps=args.steps, seed=args.seed, num_threads=args.num_threads)
    model_conf = DetectorConf(sigma0=args.sigma0, num_octaves=args.num_octaves)
    meta = train_detector(args.dataset, args.scenes, args.output, conf, model_conf)
    print(f"validation {meta['validation']}; wrote {args.output}")
    return 0


def _add_network_parser(commands, name: str, help: str, dataset_help: str, output: Path) -> argparse.ArgumentParser:
    """A `train NAME` parser with what every network's training takes."""
    parser = commands.add_parser(name, help=help)
    parser.add_argument("dataset", type=existing_file, help=dataset_help)
    parser.add_argument("--output", type=Path, default=output)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-threads", type=positive_int, default=2)
    return parser


def _add_scenes_option(parser: argparse.ArgumentParser) -> None:
    """`--scenes`: the scene folders a dataset was built from, for trainings that read their images."""
    parser.add_argument(
        "--scenes", type=existing_folder, default=str(datasets_root() / "train"), help="the scenes it was built from"
    )


def add_train_commands(subparsers) -> None:
    """Register `train descriptor|matcher|detector` on an argparse subparsers object."""
    train = subparsers.add_parser("train", help="train the MSK networks from an `msk data build` dataset")
    commands = train.add_subparsers(dest="train_command", required=True)

    descriptor = _add_network_parser(
        commands, "descriptor", "the triplet descriptor network", "DATASET.h5 from `msk data build`", DESCRIPTOR_WEIGHTS
    )
    descriptor.add_argument("--steps", type=positive_int, default=DescriptorTrainConf.steps)
    descriptor.add_argument("--batch-tracks", type=positive_int, default=DescriptorTrainConf.batch_tracks)
    descriptor.add_argument(
        "--channels",
        type=positive_int,
        nargs=2,
        default=DescriptorTrainConf.channels,
        help="widths of the two convolution stages",
    )
    descriptor.set_defaults(func=_run_descriptor)

    matcher = _add_network_parser(
        commands,
        "matcher",
        "the match-decision network (needs the descriptor)",
        "DATASET.h5 from `msk data build` (its splits and SfM cache)",
        MATCH_DECISION_WEIGHTS,
    )
    _add_scenes_option(matcher)
    matcher.add_argument("--descriptor", type=existing_file, default=str(DESCRIPTOR_WEIGHTS))
    matcher.add_argument("--epochs", type=positive_int, default=MatcherTrainConf.epochs)
    matcher.add_argument("--plot", type=Path, help="PNG of the validation precision/recall curves")
    matcher.set_defaults(func=_run_matcher)

    detector = _add_network_parser(
        commands,
        "detector",
        "the recursive multi-scale detector",
        "DATASET.h5 from `msk data build` (its detector samples)",
        DETECTOR_WEIGHTS,
    )
    _add_scenes_option(detector)
    detector.add_argument("--steps", type=positive_int, default=DetectorTrainConf.steps)
    # Finer scale-spaces were measured and not shipped (MODEL_CARD.md): the option reproduces them.
    detector.add_argument(
        "--sigma0", type=positive_float, default=DetectorConf.sigma0, help="scale (pixels) of the finest level"
    )
    detector.add_argument(
        "--num-octaves", type=positive_int, default=DetectorConf.num_octaves, help="octaves of the image pyramid"
    )
    detector.set_defaults(func=_run_detector)


def _run_show_keypoints(args: argparse.Namespace) -> int:
    count = show_keypoints(args.image, args.output, args.max_size, args.max_keypoints)
    print(f"{count} keypoints drawn; wrote {args.output}")
    return 0


def add_show_commands(subparsers) -> None:
    """Register `show keypoints`: the detector's keypoints and score maps on one image."""
    show = subparsers.add_parser("show", help="pictures of what the MSK model sees")
    commands = show.add_subparsers(dest="show_command", required=True)
    keypoints = commands.add_parser("keypoints", help="keypoints by scale and the score map of every level")
    keypoints.add_argument(
        "image", type=existing_file, nargs="?", help="default: a synthetic scene of blobs of 5 sizes"
    )
    keypoints.add_argument("--output", type=Path, required=True, help="PNG to write")
    keypoints.add_argument("--max-size", type=positive_int, default=1024)
    keypoints.add_argument("--max-keypoints", type=positive_int, default=1024)
    keypoints.set_defaults(func=_run_show_keypoints)
