"""COLMAP plugin: feature extraction, pair selection, matching and reconstruction through pycolmap."""

# pycolmap's wheel exports its own zlib; if it is loaded first, later PNG writes (matplotlib,
# Pillow, zlib.compress) abort the process. Loading the system zlib first avoids the clash.
import zlib  # noqa: F401  (must stay the first import)
