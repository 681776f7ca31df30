"""Argument types of the `msk data` and `msk train` commands: a missing input is a usage error
(one `msk: error:` line, exit code 2) before any work starts, not a traceback minutes later."""

import argparse
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
