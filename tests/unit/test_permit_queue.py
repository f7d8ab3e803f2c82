"""The permit queue's hand-over (worker.permit_queue), without Redis: ``book_up_to`` stands in
for the script and hands out slots 10 ms apart."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator

import pytest

from worker.permit_queue import PermitQueue, Run


class Interrupted(Exception):
    pass


@pytest.fixture
def interrupt_after() -> Iterator[object]:
    """``interrupt_after(seconds)``: raise :class:`Interrupted` in the main thread then."""

    def handler(_signum: int, _frame: object) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, handler)

    def arm(seconds: float) -> None:
        signal.setitimer(signal.ITIMER_REAL, seconds)

    yield arm
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def test_a_waiter_that_stops_waiting_never_holds_up_the_others(interrupt_after) -> None:
    """A thread interrupted while queued behind a slow run leaves the line; the run's server
    and a thread that asks after it are still booked, and the queue ends empty and idle."""
    queue = PermitQueue()
    release = threading.Event()
    served: list[int] = []

    def book_up_to(count: int) -> Run:
        served.append(count)
        if len(served) == 1:
            release.wait(10)  # the first run is slow: the main thread queues behind it
        return Run(count, 0, 1_000_000, 10_000)

    first = threading.Thread(target=queue.book, args=(book_up_to,), daemon=True)
    first.start()
    deadline = time.monotonic() + 5
    while not served and time.monotonic() < deadline:
        time.sleep(0.001)
    assert served == [1]
    interrupt_after(0.05)
    with pytest.raises(Interrupted):
        queue.book(book_up_to)  # queued behind the slow run, then interrupted
    release.set()
    first.join(5)
    assert not first.is_alive()
    later: list[object] = []
    asker = threading.Thread(target=lambda: later.append(queue.book(book_up_to)), daemon=True)
    asker.start()
    asker.join(5)
    assert not asker.is_alive(), "a later thread waits for a turn held by the interrupted one"
    assert [b.slot_us for b in later] == [1_000_000]  # type: ignore[attr-defined]
    assert served == [1, 1]  # the interrupted thread was not booked for
