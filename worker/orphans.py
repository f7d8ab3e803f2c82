"""Rows ``queued`` whose message is gone, found by the live workers and published again.

A ``queued`` row's message is in the broker's queue, or in some worker's hands (counted in
Redis by :class:`worker.heartbeat.MessagesInHand` from the moment Celery receives it). A row
with its message in neither place for a while has lost it: kombu pops a message before it
records it as unacknowledged, and Celery hears of it after that, so a worker killed in between
takes the message with it; a refiller killed between take and publish (:mod:`worker.window`)
leaves the same. Unfound, such a row would wait for ``imgmod run``'s stall detection or
``imgmod resume``. One process of the fleet looks (the holder of the look's
:class:`~worker.duty.Duty`), from its lease keeper's thread (:mod:`worker.heartbeat`).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import sqlalchemy as sa

from worker import queue, store
from worker.duty import Duty, broker_client
from worker.duty import held as duty_held

if TYPE_CHECKING:
    from celery import Celery
    from sqlalchemy.engine import Engine

# Out of sight this long means lost. The legitimate moments a queued row's message is nowhere
# (a refill's publish, a retry's publish, kombu handing a message to Celery) last milliseconds
# to a second or two; 30 s is also the default lease, so a killed worker's lost messages come
# back with its expired leases, and it stays above `imgmod run`'s stall detection, which keeps
# the repair of a broker that lost everything (tests/faults/test_broker_loss.py).
ORPHAN_GRACE_S = 30.0
LOOK_INTERVAL_S = 5.0  # one look costs LLEN, and when the queue is short one indexed SELECT
LOOK_QUEUE_MAX = 1000  # longer queue: its messages are most of the queued rows; look later
LOOK_ROWS_MAX = 5000  # queued rows examined per look (the rest at the next ones)
# The look's duty passes on this long after its holder's last look: two of its ~5 s rounds can
# be late. A lost row is then republished at most this much later than if every process
# looked, and only when the holder itself died.
LOOK_HOLD_S = 12.0
ORPHAN_KEY = "imgmod:orphan:"  # one publisher per lost row among the workers that find it

Suspect = tuple[int, object]  # a queued row: its id and its updated_at (any change moves it)


def confirm_orphans(
    suspects: Mapping[Suspect, float], unseen: Iterable[Suspect], now: float, grace: float
) -> tuple[dict[Suspect, float], list[int]]:
    """Which queued rows have had no message anywhere for ``grace`` seconds.

    ``unseen`` are the queued rows this look found with no message; ``suspects`` those the
    previous look found, each with when it was first found. A row is out of sight since then
    only if every look since found it so with the same ``updated_at``: a claim, retry or
    requeue changes that, and a look that sees its message drops it. Returns the suspects to
    keep (a confirmed row starts over, so it is published again at most once a grace) and the
    confirmed ids, ascending. ``now`` and the times are monotonic seconds of one process, so no
    clock is compared with another host's.
    """
    kept: dict[Suspect, float] = {}
    confirmed: list[int] = []
    for key in unseen:
        since = suspects.get(key, now)
        if now - since >= grace:
            confirmed.append(key[0])
            since = now
        kept[key] = since
    return kept, sorted(confirmed)


def message_item_id(raw: str | bytes) -> int | None:
    """A message's first item id, None if none (:func:`worker.queue.message_item_ids`)."""
    ids = queue.message_item_ids(raw)
    return ids[0] if ids else None


def queued_rows(engine: Engine, limit: int) -> list[Suspect]:
    """Up to ``limit`` ``queued`` rows, any job: one read on the ``(state, ...)`` index."""
    with engine.connect() as conn:
        return [(i, at) for i, at in conn.execute(_queued_rows(limit))]


@functools.lru_cache(maxsize=4)
def _queued_rows(limit: int) -> sa.Select[int, object]:
    """The statement of :func:`queued_rows`, built once. ``updated_at`` is read as the driver
    gives it (a datetime, or SQLite's text), not through the column's type: a look only
    compares it with the previous look's, and converting thousands of stamps every few seconds
    was a third of a look's CPU (``bench/idle.py``)."""
    items = store.items
    stamp = sa.type_coerce(items.c.updated_at, sa.types.NullType())
    return sa.select(items.c.id, stamp).where(items.c.state == "queued").limit(limit)


@dataclass
class OrphanFinder:
    """Finds ``queued`` rows whose message is nowhere and claims them for publishing again.

    Every worker process's lease keeper (:mod:`worker.heartbeat`, which knows the messages in
    hand) calls :meth:`look`; only the holder of the look's ``duty`` looks, the others forget
    their suspects. Costs nothing per image: a look every ``interval`` seconds is one LLEN while the
    queue is long (its messages then stand for the queued rows; a lost one is found once the
    queue runs short, at the job's tail at the latest), else one indexed SELECT of the queued
    rows, and only when there are some, the short queue's ids and the ids in hand. A wrong
    guess costs a duplicate message, which the claim turns into a no-op.
    """

    engine: Engine
    app: Celery
    grace: float = ORPHAN_GRACE_S
    interval: float = LOOK_INTERVAL_S
    duty: Duty | None = None  # a worker's: one process of the fleet looks (worker.duty)
    _suspects: dict[Suspect, float] = field(default_factory=dict, init=False)
    _due: float = field(default=0.0, init=False)

    def look(self, in_hand: Callable[[], set[int]], now: float | None = None) -> list[int]:
        """The ids confirmed lost by this look (if one is due), each claimed for this process
        so no other worker publishes it too; the caller publishes them. ``in_hand`` returns
        the ids every worker holds. Raises the broker's and the database's errors."""
        now = time.monotonic() if now is None else now
        if now < self._due:
            return []
        self._due = now + 0.9 * self.interval  # at most this often, whatever the caller's jitter
        if not duty_held(self.duty, self.app):
            self._suspects.clear()  # another process looks; if this one takes over, afresh
            return []
        if not self._queue_is_short():
            self._suspects.clear()
            return []
        rows = queued_rows(self.engine, LOOK_ROWS_MAX)
        if not rows:
            self._suspects.clear()
            return []
        # After the rows, and in the order a message moves (queue -> popped -> in hand): one in
        # transit can be missed by this look, never by every look of a grace.
        waiting = self._waiting_ids()
        if waiting is None:
            self._suspects.clear()
            return []
        held = in_hand()
        unseen = [row for row in rows if row[0] not in waiting and row[0] not in held]
        self._suspects, confirmed = confirm_orphans(self._suspects, unseen, now, self.grace)
        return self._claim(confirmed)

    def _queue_is_short(self) -> bool:
        """At most :data:`LOOK_QUEUE_MAX` messages wait (False on brokers other than Redis)."""
        with broker_client(self.app) as client:
            return client is not None and int(client.llen(self._queue)) <= LOOK_QUEUE_MAX

    def _waiting_ids(self) -> set[int] | None:
        """The ids of the messages in the queue; None when it has grown past
        :data:`LOOK_QUEUE_MAX` (or the broker is not Redis)."""
        with broker_client(self.app) as client:
            if client is None:
                return None
            pipe = client.pipeline(transaction=True)  # one snapshot of length and contents
            pipe.llen(self._queue)
            pipe.lrange(self._queue, 0, LOOK_QUEUE_MAX - 1)
            length, contents = pipe.execute()
        if int(length) > LOOK_QUEUE_MAX:
            return None
        return {i for message in contents for i in queue.message_item_ids(message)}

    @property
    def _queue(self) -> str:
        return str(self.app.conf.task_default_queue)

    def _claim(self, ids: list[int]) -> list[int]:
        if not ids:
            return []
        with broker_client(self.app) as client:
            if client is None:
                return []
            pipe = client.pipeline(transaction=False)
            for item_id in ids:
                pipe.set(f"{ORPHAN_KEY}{item_id}", "1", nx=True, ex=max(1, math.ceil(self.grace)))
            won = pipe.execute()
        return [item_id for item_id, ours in zip(ids, won, strict=True) if ours]
