"""Calls that left late, kept in Redis where the limiter's 403 script finds them.

Why: the service counts calls where they arrive, in a sliding one-second window. A call that
leaves more than the margin's slack after its slot (1/margin - 1 of a second) is still in that
window when the call a second's worth of slots later arrives, and the service refuses that
later call. Such a 403 is the fleet's own timing (a thread woken late on a busy host), not a
lower cap: it should teach the margin (and may cut gently, as any jitter 403), but never count
towards the signs of a lower cap that halve the rate. On a loaded 2-core box 21 of 24 403s
came 1.0-1.7 s after a call that had left 10-82 ms late: a second, plus the refused call's
own latency before its answer said so; they came in clusters, after clusters of late calls. Without
this record, such a cluster read as a lower cap and cut the rate (bench/RESULTS.md, seventh
session).

A call at least :data:`LATE_S` late is recorded before it is sent (0.1-3 % of calls on a
busy 2-core host; the refused call's 403 may come back before the late call's own answer) in
a sorted set: its member the slot it was booked for, its score
the moment it left, both in the limiter's Redis server microseconds. The 403 script
(:data:`worker.limits_lua.THROTTLED_LUA`) takes one recorded call per refusal it explains,
so a few late calls cannot excuse the many 403s of a truly lower cap.
"""

from __future__ import annotations

import logging
from typing import Any

import redis

log = logging.getLogger(__name__)

LATE_S = 0.01  # the slack at a margin of 0.99: a call less late than this costs no 403
KEEP_US = 5_000_000  # a late call explains a refusal within about a second; kept 5 s
TTL_MS = 60_000


def late_key(limiter_key: str) -> str:
    """The sorted set of a limiter's late calls."""
    return f"{limiter_key}:late"


class LateCalls:
    """Records this fleet's late calls for the limiter on ``limiter_key``."""

    def __init__(self, client: redis.Redis, limiter_key: str) -> None:
        self.client = client
        self.key = late_key(limiter_key)

    def note(self, slot_us: int, late: float) -> None:
        """Record a call that left ``late`` seconds after ``slot_us``, if that is late enough
        to cost a 403. Advisory: Redis away only loses the record (the 403 then counts as
        the limiter counted it before)."""
        if late < LATE_S or slot_us <= 0:
            return
        left = slot_us + int(late * 1_000_000)
        try:
            pipe: Any = self.client.pipeline(transaction=False)
            pipe.zadd(self.key, {str(slot_us): left})
            pipe.zremrangebyscore(self.key, "-inf", left - KEEP_US)
            pipe.pexpire(self.key, TTL_MS)
            pipe.execute()
        except redis.RedisError as exc:
            log.debug("could not record a late call on %s: %s", self.key, type(exc).__name__)
