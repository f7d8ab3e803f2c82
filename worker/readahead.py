"""Reading ahead: the next items of an iterator produced in a background thread (pure I/O glue).

Why: a producer has two halves that wait on different things. Reading and validating input
(or fetching an OSS listing page) is Python, holding the GIL; inserting a batch is mostly the
database's own work (SQLite's B-trees and WAL writes in C with the GIL released, PostgreSQL's
backend in another process). Run one after the other, they add up; with the next batch read
while the current one is inserted, the slower half sets the pace (``imgmod enqueue`` on a
million references, bench/RESULTS.md).
"""

from __future__ import annotations

import gc
import queue
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()  # the source ran out
_PUT_POLL = 0.2  # seconds between checks that the consumer is still there


def read_ahead(source: Iterable[T], *, depth: int = 1, name: str = "read-ahead") -> Iterator[T]:
    """``source``'s items, in order, produced up to ``depth`` items ahead of the caller by a
    daemon thread.

    At most the item being used, ``depth`` queued and one being produced are held, so memory
    stays bounded. An exception raised by ``source`` is raised here, after the items before
    it were yielded (a bad file fails at the same point of the input as without the thread).
    Closing the iterator (the caller stopped or failed) lets the thread end after at most the
    item in progress; it never touches ``source`` again.
    """
    ahead: queue.Queue[object] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def hand_over(item: object) -> bool:
        while not stop.is_set():
            try:
                ahead.put(item, timeout=_PUT_POLL)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in source:
                if not hand_over(item):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, raised there
            hand_over(_Failed(exc))
            return
        hand_over(_DONE)

    thread = threading.Thread(target=run, name=name, daemon=True)
    _tune_process(+1)
    thread.start()
    try:
        while True:
            got = ahead.get()
            if got is _DONE:
                return
            if isinstance(got, _Failed):
                raise got.error
            yield got  # type: ignore[misc]  # anything else is an item of source
    finally:
        stop.set()
        _tune_process(-1)


# Why the switch interval is lowered while a read-ahead runs: the caller's thread gives the GIL
# up at every database call and needs it back as soon as the answer is in, but the thread
# reading ahead keeps it, if busy, for the interpreter's whole switch interval (5 ms). A batch
# of ``imgmod enqueue`` on PostgreSQL makes a few dozen such calls: 0.2 ms instead of 5 took
# 200,000 references from ~21 s to ~16 s (bench/RESULTS.md).
#
# Why the collector's young generation is collected less often meanwhile: a read-ahead builds
# batches of thousands of rows (tuples, dataclass instances, strings), which reference counting
# frees; none of them is in a cycle. At the default threshold (a young collection every 700
# new containers) the collector ran thousands of times a batch, each time walking the part of
# the batch already built, and the older generations after: about a fifth of the reading
# thread's CPU, holding the GIL. At 50,000 the enqueue of a million references with a worker
# beside went from 18,000-18,700/s to 21,200-22,200/s on SQLite, and the producer's CPU a
# reference fell by a fifth on SQLite and a quarter on PostgreSQL (bench/RESULTS.md, eleventh
# session). Cycles made meanwhile are still collected, only later.
#
# Both are the process's settings: counted, so overlapping read-aheads restore them once, when
# the last one ends.
HANDOFF_S = 0.0002
BULK_YOUNG_THRESHOLD = 50_000
_tuning_lock = threading.Lock()
_tuning_users = 0
_handoff_saved = 0.005
_thresholds_saved: tuple[int, ...] = (700, 10, 10)


def _tune_process(change: int) -> None:
    global _tuning_users, _handoff_saved, _thresholds_saved
    with _tuning_lock:
        if change > 0 and _tuning_users == 0:
            _handoff_saved = sys.getswitchinterval()
            sys.setswitchinterval(min(HANDOFF_S, _handoff_saved))
            _thresholds_saved = gc.get_threshold()
            young, *older = _thresholds_saved
            gc.set_threshold(max(young, BULK_YOUNG_THRESHOLD), *older)
        _tuning_users += change
        if change < 0 and _tuning_users == 0:
            sys.setswitchinterval(_handoff_saved)
            gc.set_threshold(*_thresholds_saved)


class _Failed:
    """What ``source`` raised, carried across the queue (an exception could be an item)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error
