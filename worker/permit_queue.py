"""A process's threads asking for permits, served in turn by one of them: a script run books
for every thread waiting, not one each (:meth:`worker.limits.RateLimiter.book`).

Why: a worker's call threads ask for a permit per image, and each ask was a round trip to
Redis (redis-py packing a dozen script arguments, parsing a five-value reply), a third of the
worker's Redis CPU. At the cap the threads queue for the schedule anyway (it is booked up to
the limiter's horizon); the first in the queue now books as many slots as threads are waiting
(as many as the horizon allows), hands each its own, and passes the turn to the next one still
waiting. The slots are the ones the threads would have booked one by one, in the same order:
the script spaces permits exactly as single runs would (:mod:`worker.limits_lua`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from worker.permits import Booking


@dataclass(frozen=True)
class Run:
    """What one run of the permit script booked: ``booked`` permits (0: none), the first
    ``wait_us`` from now at server time ``slot_us``, the rest ``interval_us`` apart; when none,
    ``wait_us`` until one within the horizon may exist."""

    booked: int
    wait_us: int
    slot_us: int
    interval_us: int


class _Asker:
    """One thread's ask: answered with a booking or an error, or woken to take its turn."""

    __slots__ = ("asked", "booking", "error", "ready")

    def __init__(self, asked: float) -> None:
        self.asked = asked
        self.booking: Booking | None = None
        self.error: BaseException | None = None
        self.ready = threading.Event()

    def answered(self) -> bool:
        return self.booking is not None or self.error is not None


class PermitQueue:
    """The waiting threads of one process, in order of asking. Thread-safe; one per process
    (a forked child makes its own: the parent's may be mid-turn)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._waiting: deque[_Asker] = deque()
        self._serving = False

    def book(self, book_up_to: Callable[[int], Run]) -> Booking:
        """A booking for the calling thread. ``book_up_to(n)`` books up to ``n`` consecutive
        permits (at least one, waiting for the horizon as it must) or raises; it runs in one
        thread at a time, the one whose turn it is. An error there is every thread's of that
        run: each raises its own copy."""
        me = _Asker(time.monotonic())
        with self._guard:
            self._waiting.append(me)
            serves = not self._serving
            self._serving = True
        if not serves:
            try:
                me.ready.wait()
            except BaseException:  # interrupted (a signal in the main thread): leave the line
                self._leave(me)
                raise
        if not me.answered():  # the first to ask, or woken for its turn: serve the queue
            self._serve(me, book_up_to)
        if me.error is not None:
            raise _copy(me.error) from me.error
        assert me.booking is not None  # noqa: S101 - answered() above
        return me.booking

    def _serve(self, me: _Asker, book_up_to: Callable[[int], Run]) -> None:
        """Book for the waiting threads, oldest first, until ``me`` (the oldest) is answered;
        then pass the turn to the oldest still waiting, if any."""
        try:
            while not me.answered():
                with self._guard:
                    wanted = len(self._waiting)
                try:
                    run = book_up_to(wanted)
                except BaseException as exc:  # noqa: BLE001 - handed to the threads it failed
                    for asker in self._oldest(wanted):
                        asker.error = exc
                        asker.ready.set()
                    continue
                due = time.monotonic() + run.wait_us / 1_000_000
                for i, asker in enumerate(self._oldest(run.booked)):
                    offset_us = i * run.interval_us
                    asker.booking = Booking(
                        run.slot_us + offset_us, due + offset_us / 1_000_000, asker.asked
                    )
                    asker.ready.set()
        finally:
            with self._guard:
                if self._waiting:
                    self._waiting[0].ready.set()  # its turn: it wakes unanswered and serves
                else:
                    self._serving = False

    def _leave(self, me: _Asker) -> None:
        """Take ``me`` out of the queue, passing the turn on if it had just been handed to
        it: a thread that stops waiting must never hold up the ones behind it."""
        with self._guard:
            if me not in self._waiting:
                return  # answered meanwhile: its permit goes unused, as an unused booking does
            had_turn = self._waiting[0] is me and me.ready.is_set()
            self._waiting.remove(me)
            if had_turn:
                if self._waiting:
                    self._waiting[0].ready.set()
                else:
                    self._serving = False

    def _oldest(self, count: int) -> list[_Asker]:
        """The ``count`` oldest waiting threads, out of the queue (only the server takes)."""
        with self._guard:
            return [self._waiting.popleft() for _ in range(min(count, len(self._waiting)))]


def _copy(error: BaseException) -> BaseException:
    """The error of a run for one of the threads it failed (one instance raised in several
    threads at once would share, and garble, one traceback)."""
    try:
        return type(error)(*error.args)
    except Exception:  # noqa: BLE001 - an exception class with another signature
        return RuntimeError(str(error))
