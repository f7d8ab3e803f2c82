"""The per-AccessKey QPS cap, as a sliding one-second window.

The vendor caps a user at 100 calls per second and answers Code 403 beyond it. A refused call
does not enter the window, so a client that keeps hammering does not lock itself out longer than
the window it already filled.
"""

from __future__ import annotations

from collections import deque

WINDOW_SECONDS = 1.0


class SlidingWindow:
    """Admit at most ``cap`` calls per key in any window of one second (clock passed in)."""

    def __init__(self, cap: float) -> None:
        self.cap = cap
        self._calls: dict[str, deque[float]] = {}

    def admit(self, key: str, now: float) -> bool:
        calls = self._calls.get(key)
        if calls is None:
            calls = self._calls[key] = deque()
        horizon = now - WINDOW_SECONDS
        while calls and calls[0] <= horizon:
            calls.popleft()
        if len(calls) >= self.cap:
            return False
        calls.append(now)
        return True

    def in_window(self, key: str, now: float) -> int:
        """How many admitted calls of ``key`` are still inside the window at ``now``."""
        horizon = now - WINDOW_SECONDS
        return sum(1 for t in self._calls.get(key, ()) if t > horizon)
