"""Holding Ctrl-C while a write must finish: a late stop is better than a half-written result."""

import signal
import threading
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Delay SIGINT until the block is done, then raise KeyboardInterrupt as usual.

    Python runs signal handlers in the main thread only; elsewhere the block runs unprotected.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt
