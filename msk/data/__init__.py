"""Self-supervised training data from structure-from-motion (issue #4).

scenes.py finds scenes and their split, sfm.py reconstructs them with COLMAP SIFT, targets.py
picks tracks and detector samples, patches.py crops them, build.py streams them into an HDF5
file, dataset.py serves them to torch, show.py draws them, cli.py wraps build and show.
"""

# pycolmap's extension exports the zlib it bundles, and the system libz.so.1, when first
# loaded as pycolmap's dependency, binds its internal calls to that copy: any later zlib user
# (Python's zlib.compressobj, Pillow's PNG writer, so matplotlib's savefig) then mixes two zlib
# versions on one stream and aborts with "free(): invalid pointer". Loading libz through
# Python's zlib module before pycolmap gives libz its own symbol scope.
import zlib  # noqa: F401
