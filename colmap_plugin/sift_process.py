"""COLMAP's SIFT in a child process of its own, so that extraction threads run it in parallel.

pycolmap holds the GIL while its SIFT extracts an image: two worker threads, each with its own
extractor, took 2.0 s per 1536x1024 image, as one thread did, while COLMAP's own folder extraction
took 1.15 s on the same two cores. A child per extractor takes the work off the GIL.

The child is `python -m colmap_plugin.sift_process`, not a multiprocessing one: spawning through
multiprocessing imports the caller's main module again in the child, which runs the whole script of
a user who did not guard it with `if __name__ == "__main__"`. Images and features travel pickled
over the child's stdin and stdout; the child writes everything else (COLMAP's log) to stderr.
"""

import os
import pickle
import subprocess
import sys
import threading
import weakref
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pycolmap


def sift_options(max_keypoints: int, upright: bool, num_threads: int) -> pycolmap.FeatureExtractionOptions:
    options = pycolmap.FeatureExtractionOptions()
    options.num_threads = num_threads
    options.sift.max_num_features = max_keypoints
    options.sift.upright = upright
    return options


def extract_sift(extractor: pycolmap.FeatureExtractor, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) float32 rows [x, y, scale, orientation] (corner origin) and (N, 128) uint8 descriptors
    of a grey (H, W) uint8 image."""
    keypoints, descriptors = extractor.extract(pycolmap.Bitmap.from_array(image))
    rows = pycolmap.keypoints_to_matrix(keypoints).reshape(-1, 4)
    return rows, np.ascontiguousarray(descriptors.data, dtype=np.uint8)  # (N, 128), also for N = 0


class SiftProcessError(RuntimeError):
    """The child stopped before answering: it crashed or was killed."""


class SiftProcess:
    """COLMAP's SIFT with fixed options in a child process, started on first use, ended by `close()` or
    when this object is collected. One image at a time: callers in several threads take turns."""

    def __init__(self, max_keypoints: int, upright: bool, num_threads: int):
        self._arguments = [str(max_keypoints), str(int(upright)), str(num_threads)]
        self._child: subprocess.Popen | None = None
        self._finalizer: weakref.finalize | None = None
        self._lock = threading.Lock()

    def extract(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """As `extract_sift`, in the child; its errors are raised here as RuntimeError.

        SiftProcessError if the child stops; the next call starts a new one. A call cut short (Ctrl-C
        while waiting) ends the child too, so that its late reply is never taken for the next image's.
        """
        with self._lock:
            if self._child is None:
                self._start()
            try:
                pickle.dump(np.ascontiguousarray(image, dtype=np.uint8), self._child.stdin, pickle.HIGHEST_PROTOCOL)
                self._child.stdin.flush()
                features, error = pickle.load(self._child.stdout)
            except (BrokenPipeError, EOFError, pickle.UnpicklingError) as stopped:
                self._end()
                raise SiftProcessError("COLMAP's SIFT stopped in its process (crashed or killed)") from stopped
            except BaseException:
                self._end()
                raise
        if error is not None:
            raise RuntimeError(error)
        return features

    def close(self) -> None:
        with self._lock:
            if self._child is not None:
                self._finalizer()
                self._child = None

    def _start(self) -> None:
        self._child = subprocess.Popen(
            [sys.executable, "-m", __name__, *self._arguments],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # `-m` imports from the working folder first: this very package, wherever the caller took it from.
            cwd=Path(__file__).parents[1],
            # Out of the terminal's process group: Ctrl-C stops the caller, which decides what the child does.
            start_new_session=True,
        )
        self._finalizer = weakref.finalize(self, _close_child, self._child)

    def _end(self) -> None:
        """Kills the child, whatever it was doing, and forgets it."""
        self._child.kill()
        self._finalizer()
        self._child = None


def _close_child(child: subprocess.Popen) -> None:
    """Closing its stdin ends the child's loop; a child that does not end is killed."""
    for stream in (child.stdin, child.stdout):
        try:
            stream.close()
        except OSError:  # a broken pipe: the child is gone already
            pass
    try:
        child.wait(timeout=10)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _serve(requests: BinaryIO, replies: BinaryIO, extractor: pycolmap.FeatureExtractor) -> None:
    """Replies (features, None) to each image, or (None, the error) where COLMAP refuses it, until the input ends."""
    while True:
        try:
            image = pickle.load(requests)
        except EOFError:
            return
        try:
            reply = extract_sift(extractor, image), None
        except Exception as error:  # the caller's to report, as it would an error in its own process
            reply = None, f"{type(error).__name__}: {error}"
        pickle.dump(reply, replies, pickle.HIGHEST_PROTOCOL)
        replies.flush()


if __name__ == "__main__":
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # whatever else is printed must not enter the replies
    max_keypoints, upright, num_threads = (int(argument) for argument in sys.argv[1:4])
    options = sift_options(max_keypoints, bool(upright), num_threads)
    _serve(sys.stdin.buffer, replies, pycolmap.FeatureExtractor.create(options, pycolmap.Device.cpu))
