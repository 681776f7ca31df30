"""The data commands register on the `msk` parser, each with its handler as `func`."""

import argparse
from pathlib import Path

from msk.data.cli import add_data_commands


def test_data_commands_register_on_a_parser():
    parser = argparse.ArgumentParser(prog="msk")
    add_data_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "build", "scenes", "--output", "out.h5", "--max-points", "10"])
    assert args.func.__name__ == "_run_build" and args.max_points == 10 and args.output == Path("out.h5")
    args = parser.parse_args(["data", "show", "out.h5", "--output", "look.png"])
    assert args.func.__name__ == "_run_show"
