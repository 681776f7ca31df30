"""Argument types of the `msk` commands: a missing input or a bad number is a usage error (one
`msk: error:` line, exit code 2) before any work starts, not a traceback minutes later."""

import argparse
import math
from pathlib import Path


def existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{path} is not a file" if path.exists() else f"file not found: {path}")
    return path


def existing_folder(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is not a folder" if path.exists() else f"folder not found: {path}")
    return path


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def thread_count(text: str) -> int:
    """A positive number of threads, or -1 for all cores (COLMAP's convention)."""
    if text == "-1":
        return -1
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a positive number of threads or -1 (all cores), got {text!r}"
        ) from None


def _float_or_nan(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def fraction(text: str) -> float:
    """A number from 0 to 1, both included."""
    value = _float_or_nan(text)
    if not 0 <= value <= 1:  # NaN fails too
        raise argparse.ArgumentTypeError(f"expected a fraction from 0 to 1, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = _float_or_nan(text)
    if not 0 < value < math.inf:  # NaN fails too
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value
