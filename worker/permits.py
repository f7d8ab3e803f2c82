"""A permit of the limiter (:mod:`worker.limits`): granted (:class:`Grant`), or booked and
not yet due (:class:`Booking`)."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Grant:
    """One permit: how long the caller waited, the Redis server time it was booked for, and
    how late the caller woke for it (``late``: seconds past the slot; 0 when not booked ahead).
    A call that leaves more than 1/margin - 1 of a second late (10 ms at 0.99) is still in the
    service's one-second window when the call a second's worth of slots later arrives, which
    the service then refuses (403)."""

    waited: float
    slot_us: int
    late: float = 0.0

    @property
    def slot(self) -> float:
        """The booked moment in seconds since the epoch (server clock)."""
        return self.slot_us / 1_000_000


@dataclass(frozen=True)
class Booking:
    """A permit booked and not yet due: the caller prepares its call meanwhile (checks, the
    signature), then :meth:`wait` sleeps only what is left.

    Why: calls that reach the service late by varying amounts crowd a second the service
    counts, and a 403 follows. With the work done after the sleep, a call left 2 ms after its
    slot at the median but 26-40 ms at the 99th percentile on a loaded 2-core box (its thread
    waiting for the GIL at every Redis reply and through the signing); done before, only the
    send is left after the slot."""

    slot_us: int  # the Redis server time the permit is booked for, in µs
    due: float  # the slot on this process's monotonic clock
    started: float  # when the caller asked (monotonic)

    @property
    def slot(self) -> float:
        """The booked moment in seconds since the epoch (server clock)."""
        return self.slot_us / 1_000_000

    def wait(self) -> Grant:
        """Sleep until the slot (not at all if it has passed); the permit as granted."""
        left = self.due - time.monotonic()
        if left > 0:
            time.sleep(left)
        now = time.monotonic()
        return Grant(now - self.started, self.slot_us, max(0.0, now - self.due))
