"""Images and pairs in parallel: worker threads, each running torch on one thread of its own.

On the 2-core machine, two workers extract MSK features 1.3x faster than one image at a time on
two threads (`msk bench speed`, see BENCHMARKS.md): patch cutting, refinement and the small
networks leave a second thread idle much of the time. One thread per image also makes every
image's features independent of the number of cores (torch's reductions are not).
A thread that has not used torch yet takes its thread count from the last `torch.set_num_threads`
of any thread, so the caller's count is read before the workers set theirs and restored after.
Results come back in input order, so stores and databases are written in that order by the caller.
"""

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

import torch

# Each worker holds an image's working memory: an MSK extraction of a 1536x1024 image peaks 0.17 GB
# above the loaded models, at 8,192 or 12,288 keypoints (resource.getrusage, session 7); COLMAP's SIFT,
# in the worker's child process (colmap_plugin.sift_process), 0.44 GB (session 21).
MAX_DEFAULT_WORKERS = 8

Item = TypeVar("Item")
Result = TypeVar("Result")


def default_workers() -> int:
    """One worker per CPU core this process may use, at most MAX_DEFAULT_WORKERS."""
    return max(1, min(len(os.sched_getaffinity(0)), MAX_DEFAULT_WORKERS))


def ordered_map(
    function: Callable[[Item], Result], items: Iterable[Item], workers: int | None = None
) -> Iterator[tuple[Item, Result]]:
    """(item, function(item)) in the order of `items`, computed by `workers` threads (None: default_workers()).

    Up to two items per worker are submitted, the one being handed back included. `items` is drawn
    from the caller's thread, as far ahead as that. When the caller stops early (an error, Ctrl-C,
    closing the generator), items not started are cancelled and those running are waited for (at
    most one per worker). An exception raised by `function` is raised here, at its item.
    """
    workers = workers or default_workers()
    pending: deque[tuple[Item, Future]] = deque()
    queue = iter(items)
    callers_threads = torch.get_num_threads()
    try:
        with ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            try:
                while True:
                    for item in queue:
                        pending.append((item, pool.submit(function, item)))
                        if len(pending) >= 2 * workers:
                            break
                    if not pending:
                        return
                    item, future = pending.popleft()
                    yield item, future.result()
            finally:
                for _, future in pending:
                    future.cancel()
    finally:
        torch.set_num_threads(callers_threads)
