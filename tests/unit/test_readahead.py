"""worker.readahead.read_ahead: items in order, a bounded distance ahead of the caller, a
failure raised where it happened, and a closed iterator's thread gone."""

from __future__ import annotations

import gc
import sys
import threading
from collections.abc import Iterator

import pytest

from worker.processes import wait_until
from worker.readahead import BULK_YOUNG_THRESHOLD, HANDOFF_S, read_ahead


def _counted(n: int, taken: list[int], lock: threading.Lock) -> Iterator[int]:
    for i in range(n):
        with lock:
            taken.append(i)
        yield i


def test_items_come_in_order() -> None:
    assert list(read_ahead(iter(range(1000)))) == list(range(1000))
    assert list(read_ahead([])) == []


def test_it_runs_at_most_depth_items_ahead_of_the_caller() -> None:
    taken: list[int] = []
    lock = threading.Lock()
    it = read_ahead(_counted(100, taken, lock), depth=2)
    assert next(it) == 0
    # the item handed out, two queued, one made and waiting to be queued
    wait_until(lambda: len(taken) == 4, 5, "the read-ahead to fill")
    with lock:
        assert len(taken) == 4
    it.close()


def test_a_failure_is_raised_after_the_items_before_it() -> None:
    def failing() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("line 3: imageUrl: not a URL")

    it = read_ahead(failing())
    assert next(it) == 1 and next(it) == 2
    with pytest.raises(ValueError, match="line 3"):
        next(it)


def test_closing_the_iterator_ends_the_thread_and_reads_no_further() -> None:
    taken: list[int] = []
    lock = threading.Lock()
    it = read_ahead(_counted(10_000, taken, lock), name="closing-test")
    next(it)
    it.close()
    wait_until(
        lambda: not any(t.name == "closing-test" for t in threading.enumerate()),
        5,
        "the read-ahead thread to end",
    )
    assert len(taken) <= 3


def test_the_process_is_tuned_while_read_aheads_run_and_restored_once_after() -> None:
    """The switch interval is lowered and the young generation collected less often while any
    read-ahead runs; both come back when the last one ends."""
    interval, thresholds = sys.getswitchinterval(), gc.get_threshold()
    first = read_ahead(iter(range(10)))
    next(first)
    second = read_ahead(iter(range(10)))
    next(second)
    tuned = (pytest.approx(HANDOFF_S), (BULK_YOUNG_THRESHOLD, *thresholds[1:]))
    assert (sys.getswitchinterval(), gc.get_threshold()) == tuned
    first.close()
    assert (sys.getswitchinterval(), gc.get_threshold()) == tuned  # the second still runs
    assert list(second) == list(range(1, 10))
    assert sys.getswitchinterval() == pytest.approx(interval)
    assert gc.get_threshold() == thresholds
