"""Permits booked and waited for later (worker.permits.Booking), on the in-process limiter;
the shared limiter's are tested against Redis in tests/integration/test_limits.py."""

from __future__ import annotations

import gc
import time

from worker.limits_local import LocalRateLimiter
from worker.permits import Booking
from worker.tasks import _freeze_what_start_up_made


def test_bookings_are_spaced_by_the_rate_and_taken_without_sleeping() -> None:
    limiter = LocalRateLimiter(20)
    asked = time.monotonic()
    bookings = [limiter.book() for _ in range(3)]
    assert time.monotonic() - asked < 0.04  # three slots booked, none slept
    dues = [b.due for b in bookings]
    assert [round(b - a, 3) for a, b in zip(dues, dues[1:], strict=False)] == [0.05, 0.05]
    last = bookings[-1].wait()
    assert time.monotonic() >= bookings[-1].due
    assert last.waited >= 0.09


def test_a_booking_waited_for_after_its_slot_says_how_late_its_call_leaves() -> None:
    now = time.monotonic()
    late = Booking(slot_us=1, due=now - 0.05, started=now - 0.06).wait()
    assert late.late >= 0.05  # the caller came back 50 ms after its slot: no sleep
    assert late.waited >= 0.06
    early = Booking(slot_us=1, due=time.monotonic() + 0.03, started=time.monotonic()).wait()
    assert 0 <= early.late < early.waited  # slept to the slot: late only by the wake-up


def test_acquire_is_a_booking_waited_for_at_once() -> None:
    limiter = LocalRateLimiter(20)
    assert limiter.acquire() < 0.01  # the first slot is now
    started = time.monotonic()
    limiter.acquire()
    assert time.monotonic() - started >= 0.045


def test_a_worker_freezes_what_its_start_up_made() -> None:
    """After the start-up, a full collection must not walk Celery, kombu and SQLAlchemy."""
    before = gc.get_freeze_count()
    try:
        _freeze_what_start_up_made()
        assert gc.get_freeze_count() > max(before, 10_000)
    finally:
        gc.unfreeze()
