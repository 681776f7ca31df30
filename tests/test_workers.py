"""Worker threads hand results back in order, on one torch thread each, and stop cleanly."""

import subprocess
import sys
import threading
import time

import pytest
import torch

from colmap_plugin.workers import ordered_map


def test_results_come_back_in_input_order():
    def slow_for_small(value: int) -> int:
        time.sleep(0.01 * (5 - value % 5))  # later items finish first
        return value * value

    assert list(ordered_map(slow_for_small, range(12), workers=3)) == [(k, k * k) for k in range(12)]


def test_workers_run_torch_on_one_thread_and_leave_the_callers_setting():
    threads_before = torch.get_num_threads()
    seen = [threads for _, threads in ordered_map(lambda _: torch.get_num_threads(), range(4), workers=2)]
    assert seen == [1, 1, 1, 1]
    assert torch.get_num_threads() == threads_before


def test_a_fresh_process_keeps_its_thread_count():
    """Also where the caller has not used torch before the workers start: a fresh thread takes its
    count from the last one set anywhere."""

    def threads_at_the_end(code: str) -> int:
        script = f"import torch\nfrom colmap_plugin.workers import ordered_map\n{code}\nprint(torch.get_num_threads())"
        return int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)

    untouched = threads_at_the_end("")
    assert threads_at_the_end("list(ordered_map(lambda _: torch.get_num_threads(), range(4), workers=2))") == untouched


def test_an_error_is_raised_at_its_item_and_the_rest_is_not_started():
    started = []
    lock = threading.Lock()

    def fail_at_three(value: int) -> int:
        with lock:
            started.append(value)
        if value == 3:
            raise ValueError("bad item 3")
        return value

    handed_back = []
    with pytest.raises(ValueError, match="bad item 3"):
        for item, _ in ordered_map(fail_at_three, range(100), workers=2):
            handed_back.append(item)
    assert handed_back == [0, 1, 2]
    assert len(started) < 10  # at most two items per worker ahead of the one handed back


def test_a_caller_stopping_early_cancels_the_rest():
    started = []
    results = ordered_map(lambda value: started.append(value) or value, range(100), workers=2)
    assert next(results) == (0, 0)
    results.close()
    assert len(started) < 10
