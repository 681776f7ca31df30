"""COLMAP plugin: feature extraction, pair selection, matching and reconstruction through pycolmap."""
