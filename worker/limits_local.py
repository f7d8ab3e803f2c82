"""Which limiter a process uses (:func:`limiter_for`), and the in-process one for when no
Redis exists (:class:`LocalRateLimiter`: the demo's, one worker process being the fleet).

Split from :mod:`worker.limits`, the shared limiter, whose Lua and proofs are long.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from worker.limits import QPS_MARGIN, WARM_START, LimiterTimeout, RateLimiter
from worker.limits_margin import Margin
from worker.permits import Booking, Grant

if TYPE_CHECKING:
    from worker.settings import Settings


class LocalRateLimiter:
    """The same contract as :class:`RateLimiter` for one process, when no Redis exists.

    Used only with the embedded broker (``imgmod demo`` on a machine without Redis), where a
    single worker process is the whole fleet. Multiplicative decrease on 403, linear recovery.
    """

    def __init__(self, qps: float, *, decrease_factor: float = 0.5) -> None:
        if qps <= 0:
            raise ValueError("qps must be positive")
        self.qps = qps
        self._after_cut = qps
        self._decrease_factor = decrease_factor
        self._next = time.monotonic()
        self._last_cut = 0.0
        self._lock = threading.Lock()

    def current_rate(self) -> float:
        elapsed = time.monotonic() - self._last_cut
        return min(self.qps, self._after_cut + elapsed * self.qps / 10)

    def acquire(self, timeout: float | None = None) -> float:
        return self.book(timeout).wait().waited

    def book(self, timeout: float | None = None) -> Booking:
        """As :meth:`RateLimiter.book`; the slot in epoch µs of this host's clock."""
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            if timeout is not None and slot - now > timeout:
                raise LimiterTimeout(f"no permit within {timeout:.1f}s")
            self._next = slot + 1.0 / self.current_rate()
        return Booking(int((time.time() + slot - now) * 1_000_000), slot, now)

    def on_throttled(self, slot_us: int = 0) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._last_cut >= 1.0:
                self._after_cut = max(self.qps / 20, self.current_rate() * self._decrease_factor)
                self._last_cut = now

    def on_success(self) -> None:
        """Recovery is folded into :meth:`acquire`."""

    def note_late(self, grant: Grant) -> None:
        """One process's late calls explain nothing here."""


def limiter_for(settings: Settings) -> RateLimiter | LocalRateLimiter:
    """The account's limiter: shared in Redis, or in-process when no Redis exists (demo)."""
    if settings.limiter_url:
        return RateLimiter.from_url(
            settings.limiter_url, qps=settings.qps, margin=Margin(), warm_start=WARM_START
        )
    return LocalRateLimiter(settings.qps * QPS_MARGIN)
