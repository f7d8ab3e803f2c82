"""Duties one worker process does for the whole fleet: topping up the publishing window and
looking for lost messages (:mod:`worker.window`).

Why: every worker process did both, the window each second and the look every few seconds,
though one process doing them serves all (the refill lock and the claim of each lost row
already made the others' turns redundant). With a 3,000-image job queued, the two processes of
one ``imgmod worker`` spent 17 ms of CPU a second on them on a 2-core box (``bench/idle.py``):
at a 100/s cap, 0.17 ms an image, an eighth of a bare signed call, and every host added to a
fleet added as much again, and as many statements to the database.

A duty is a key in the broker's Redis naming its holder, expiring after a few of the duty's
intervals (``hold_seconds``). The holder renews it each time it does the duty; a process that
finds it free (its holder stopped, was killed, froze or lost Redis for longer than that) takes
it. So a duty passes on within ``hold_seconds`` of its holder's end, and at worst two processes
hold it for a moment (an expiry ran out while the holder was slow): they then do what every
process did before, which the refill lock and the claims keep safe.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery

DUTY_PREFIX = "imgmod:duty:"  # one holder per duty per broker database, as the refill lock

# Take the duty if it is free or already ours (then renew it): one round trip, no race. Sent
# with EVAL (Redis keeps it compiled by its digest): once a tick, the few bytes cost nothing.
_TAKE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


def _this_process() -> str:
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


@dataclass
class Duty:
    """One fleet-wide duty (``name``), as seen by this process."""

    name: str
    hold_seconds: float
    holder: str = field(default_factory=_this_process)

    @property
    def key(self) -> str:
        return DUTY_PREFIX + self.name

    def mine(self, client: Any) -> bool:
        """Whether this process does the duty now: it takes the duty if free, or renews it if
        its own. ``client``: a Redis client of the broker. Raises Redis's errors (the caller's
        loop logs them, as it does its own)."""
        hold_ms = max(1, round(self.hold_seconds * 1000))
        return bool(client.eval(_TAKE, 1, self.key, self.holder, hold_ms))


@contextmanager
def broker_client(app: Celery) -> Iterator[Any]:
    """A Redis client of ``app``'s broker, or None on other transports (no window there)."""
    with app.producer_or_acquire() as producer:
        if producer.connection.transport.driver_type != "redis":
            yield None
            return
        with producer.channel.conn_or_acquire() as client:
            yield client


def held(duty: Duty | None, app: Celery) -> bool:
    """Whether this process does ``duty`` now: always without one (``imgmod run``'s loop, a
    test's), and on brokers other than Redis (one process per deployment there: the demo's)."""
    if duty is None:
        return True
    with broker_client(app) as client:
        return client is None or duty.mine(client)
