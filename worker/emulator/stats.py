"""Counters the tests read through ``GET /__emulator__/stats``: calls, billing, codes, concurrency.

``billed`` counts Code 200 answers, the only ones the vendor charges for; ``billed_by_image``
lets a test prove an image was never billed twice, ``billed_by_service`` what each service of a
job of several was billed.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

_SECONDS_KEPT = 3600


class Stats:
    def __init__(self) -> None:
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        """Zero the counters; calls already in flight keep being tracked."""
        self.calls = 0
        self.billed = 0
        self.by_code: Counter[str] = Counter()
        self.billed_by_image: Counter[str] = Counter()
        self.billed_by_service: Counter[str] = Counter()
        self.max_concurrency = self.in_flight
        # Wall-clock times (epoch seconds) of the first and the last call since the reset: a
        # benchmark splits a job's wall time into start-up, the calls, and the tail with them.
        self.first_call_at: float | None = None
        self.last_call_at: float | None = None
        # Calls per whole wall-clock second (epoch seconds): where a run's calls/s was lost,
        # evenly (pacing) or in gaps (stalls). The oldest seconds go past _SECONDS_KEPT.
        self.calls_by_second: Counter[int] = Counter()

    def enter(self) -> None:
        self.calls += 1
        self.last_call_at = time.time()
        second = int(self.last_call_at)
        if second not in self.calls_by_second and len(self.calls_by_second) >= _SECONDS_KEPT:
            del self.calls_by_second[min(self.calls_by_second)]
        self.calls_by_second[second] += 1
        if self.first_call_at is None:
            self.first_call_at = self.last_call_at
        self.in_flight += 1
        if self.in_flight > self.max_concurrency:
            self.max_concurrency = self.in_flight

    def leave(self) -> None:
        self.in_flight -= 1

    def record(
        self, outcome: str | int, image_key: str | None = None, service: str | None = None
    ) -> None:
        """Count one answer; a Code 200 answer is billed to ``image_key`` under ``service``."""
        self.by_code[str(outcome)] += 1
        if outcome == 200:
            self.billed += 1
            if service is not None:
                self.billed_by_service[service] += 1
            if image_key is not None:
                self.billed_by_image[image_key] += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "billed": self.billed,
            "by_code": dict(self.by_code),
            "billed_by_image": dict(self.billed_by_image),
            "billed_by_service": dict(self.billed_by_service),
            "max_concurrency": self.max_concurrency,
            "in_flight": self.in_flight,
            "first_call_at": self.first_call_at,
            "last_call_at": self.last_call_at,
            "calls_by_second": {str(k): v for k, v in sorted(self.calls_by_second.items())},
        }
