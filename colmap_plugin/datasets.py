"""Where the shared research datasets live (never copied into the repository)."""

import os
from pathlib import Path

DATASETS_ENV = "MSK_DATASETS"
_REPO_ROOT = Path(__file__).resolve().parents[1]


def datasets_root() -> Path:
    """The datasets folder: `$MSK_DATASETS`, else `../shared/datasets` beside the repository."""
    override = os.environ.get(DATASETS_ENV)
    if override:
        return Path(override).expanduser().resolve()
    return (_REPO_ROOT.parent / "shared" / "datasets").resolve()
