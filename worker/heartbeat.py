"""Leases kept alive by a live worker, and taken back from a dead one within one lease.

A claimed row is leased for ``IMGMOD_LEASE_SECONDS`` (30 s by default) on the database's
clock. Each worker process runs one :class:`LeaseKeeper` thread that

* renews, every third of a lease, the leases of the rows this process holds (registered at
  claim, released when the task leaves the row), in one statement, so a row waiting for a
  permit or for a slow call is never taken from a live worker; and
* sweeps, every few seconds, the rows whose lease ran out (their worker was killed, froze or
  lost the database for longer than two renewals) back to ``queued``, and publishes them
  again. A duplicate of a message the broker later restores is harmless: the claim refuses a
  done or leased row;
* republishes the messages a dead process held (:class:`MessagesInHand`), and the ``queued``
  rows whose message is nowhere, lost by a worker killed while kombu handed it over
  (:class:`worker.orphans.OrphanFinder`, told what every worker holds).

So a killed worker's rows are moderated again about one lease after the kill, without waiting
for the broker's visibility timeout or ``imgmod run``'s stall detection.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from sqlalchemy.engine import Engine

from worker import orphans, store, window

log = logging.getLogger("imgmod.leases")

SWEEP_MAX_INTERVAL_S = 5.0
SWEEP_MIN_INTERVAL_S = 1.0


def renew_interval(lease_seconds: float) -> float:
    """A third of the lease: two renewals can fail (a slow database) before the lease ends."""
    return lease_seconds / 3


def sweep_interval(lease_seconds: float) -> float:
    """Every few seconds: one indexed statement (state, lease end), cheap even when idle."""
    return min(SWEEP_MAX_INTERVAL_S, max(SWEEP_MIN_INTERVAL_S, lease_seconds / 6))


class _Redis(Protocol):
    def set(self, name: str, value: str, ex: int) -> Any: ...
    def scan_iter(self, match: str, count: int) -> Iterator[Any]: ...
    def hkeys(self, name: str) -> Any: ...
    def register_script(self, script: str) -> Any: ...


# KEYS[1] a dead-looking process's set, KEYS[2] its liveness key: the ids, once, to one caller.
_TAKE_ORPHANS = """
if redis.call('EXISTS', KEYS[2]) == 1 then return {} end
local ids = redis.call('HKEYS', KEYS[1])
redis.call('DEL', KEYS[1])
return ids
"""
# A count per id, not a set: a retry's message can arrive before the attempt that sent it has
# let go of the id, and a duplicate message may be held twice.
_LET_GO = """
for _, id in ipairs(ARGV) do
  if redis.call('HINCRBY', KEYS[1], id, -1) <= 0 then redis.call('HDEL', KEYS[1], id) end
end
"""
# A message's ids taken in hand, the liveness key refreshed, and (ARGV[2] > 0) the hash's
# expiry: one round trip, as a pipeline was, but one command for redis-py to pack and answer
# rather than one per id (a message carries IMGMOD_IDS_PER_MESSAGE of them).
_TOOK = """
for i = 3, #ARGV do redis.call('HINCRBY', KEYS[1], ARGV[i], 1) end
redis.call('SET', KEYS[2], '1', 'EX', ARGV[1])
if tonumber(ARGV[2]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
"""
IN_HAND_TTL_S = 24 * 3600  # a hash outlives its process long enough to be found


class MessagesInHand:
    """The item ids whose message this process has received and not finished (prefetched,
    waiting for a retry's countdown, running), in Redis beside a liveness key that the keeper
    refreshes every renewal.

    A killed worker also held messages whose row it had not yet claimed (waiting for the
    database, e.g. SQLite's one writer): those rows stay ``queued`` while the broker keeps their
    messages invisible for ``IMGMOD_VISIBILITY_TIMEOUT`` (600 s). When a process's liveness key
    has run out, another worker takes its set (atomically, once) and publishes the ids again;
    for a row already done or leased the copy costs one no-op claim. ``namespace`` keeps
    deployments that share a Redis apart.
    """

    def __init__(self, client: _Redis, namespace: str, process: str, ttl_seconds: float) -> None:
        self._redis = client
        self._prefix = f"imgmod:inhand:{namespace}:"
        self._alive_prefix = f"imgmod:alive:{namespace}:"
        self._process = process
        self._ttl = max(1, round(ttl_seconds))
        self._take = client.register_script(_TAKE_ORPHANS)
        self._let_go = client.register_script(_LET_GO)
        self._took = client.register_script(_TOOK)
        self._fresh_until = 0.0  # monotonic: until then took() leaves the hash's expiry be

    def took(self, *item_ids: int) -> None:
        """Record a message's ids in hand; raises ``redis.RedisError`` (the caller goes on).

        The liveness key is refreshed with every message (a dead process's messages are
        taken over a full TTL after its last one, after its leases ran out: the sweep comes
        first); the hash's day-long expiry only every third of the TTL."""
        moment = time.monotonic()
        expiry = IN_HAND_TTL_S if moment >= self._fresh_until else 0
        self._took(
            keys=[self._prefix + self._process, self._alive_prefix + self._process],
            args=[self._ttl, expiry, *item_ids],
        )
        if expiry:
            self._fresh_until = moment + self._ttl / 3

    def done(self, *item_ids: int) -> None:
        if item_ids:
            self._let_go(keys=[self._prefix + self._process], args=[str(i) for i in item_ids])

    def beat(self) -> None:
        self._redis.set(self._alive_prefix + self._process, "1", ex=self._ttl)

    def held_anywhere(self) -> set[int]:
        """Every id some process of this deployment holds, this one's included, and a dead
        one's until :meth:`orphans` takes them: whatever is here still has its message."""
        held: set[int] = set()
        for key in self._redis.scan_iter(match=self._prefix + "*", count=1000):
            held.update(int(i) for i in self._redis.hkeys(key))
        return held

    def orphans(self) -> list[int]:
        """Ids in the hands of processes whose liveness key ran out; each id to one caller."""
        found: list[int] = []
        for key in self._redis.scan_iter(match=self._prefix + "*", count=1000):
            name = key.decode() if isinstance(key, bytes) else str(key)
            process = name[len(self._prefix) :]
            if process == self._process:
                continue
            ids = self._take(keys=[name, self._alive_prefix + process])
            found.extend(int(i) for i in ids)
        return sorted(set(found))


class LeaseKeeper:
    """The rows this process holds, their heartbeat, and the sweep for other processes' rows.

    ``publish`` sends the ids of swept rows to the queue again; ``finder`` returns the
    process's :class:`~worker.orphans.OrphanFinder` (None: no lost-message look, as outside a
    worker). Thread-safe: the task threads call :meth:`holding`, :meth:`still_held`; the
    keeper's own thread renews and sweeps.
    """

    def __init__(
        self,
        engine: Engine,
        lease_seconds: float,
        publish: Callable[[Sequence[int]], None],
        hands: MessagesInHand | None = None,
        finder: Callable[[], orphans.OrphanFinder | None] = window.worker_orphan_finder,
    ) -> None:
        self._engine = engine
        self._lease = lease_seconds
        self._publish = publish
        self.hands = hands
        self._finder = finder
        self._held: dict[int, str] = {}
        self._confirmed: dict[int, float] = {}  # id -> when its lease was last known ours
        self._lost: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- task threads --------------------------------------------------------------------

    @contextmanager
    def holding(self, item_id: int, owner: str) -> Iterator[None]:
        """Renew ``item_id``'s lease while the block runs (the task works on the row)."""
        self.hold((item_id,), owner)
        try:
            yield
        finally:
            self.let_go(item_id, owner)

    def hold(self, item_ids: Iterable[int], owner: str) -> None:
        """Renew these rows' leases from now until :meth:`let_go` (the task just claimed them:
        their leases are known to be ours as of now)."""
        moment = time.monotonic()
        with self._lock:
            for item_id in item_ids:
                self._held[item_id] = owner
                self._confirmed[item_id] = moment
                self._lost.discard(item_id)

    def let_go(self, item_id: int, owner: str) -> None:
        """Stop renewing ``item_id``'s lease (the task is done with the row)."""
        with self._lock:
            if self._held.get(item_id) == owner:
                del self._held[item_id]
                self._confirmed.pop(item_id, None)
            self._lost.discard(item_id)

    def still_held(self, item_id: int) -> bool:
        """False once a renewal found the row leased to someone else or closed: don't call."""
        with self._lock:
            return item_id not in self._lost

    def confirmed_at(self, item_id: int) -> float:
        """When (monotonic) the row's lease was last known to be ours: its claim or the last
        renewal that found it so; minus infinity when the row is not held."""
        with self._lock:
            return self._confirmed.get(item_id, -math.inf)

    def held(self) -> dict[int, str]:
        with self._lock:
            return dict(self._held)

    # -- the keeper's thread -------------------------------------------------------------

    def renew(self) -> int:
        """Say this process is alive, and renew every held lease; returns how many."""
        if self.hands is not None:
            self._guarded("refreshing the liveness key", self.hands.beat)
        held = self.held()
        if not held:
            return 0
        moment = time.monotonic()  # before the statement: the lease runs from no earlier
        renewed = store.renew_leases(self._engine, held, self._lease)
        with self._lock:
            for item_id, owner in held.items():
                if self._held.get(item_id) != owner:
                    continue
                if item_id in renewed:
                    self._confirmed[item_id] = moment
                else:
                    self._lost.add(item_id)
        lost = len(held) - len(renewed)
        if lost:
            log.warning("%d of %d held rows were no longer ours to renew", lost, len(held))
        return len(renewed)

    def sweep(self) -> list[int]:
        """Requeue and republish rows whose lease ran out, and republish the messages a dead
        process held; returns the ids published."""
        ids = store.requeue_expired(self._engine, exclude=list(self.held()))
        if ids:
            log.warning(
                "%d rows' leases ran out (their worker died or froze): queued again", len(ids)
            )
            self._publish(ids)
        if self.hands is not None:
            swept = set(ids)
            orphans = [i for i in self.hands.orphans() if i not in swept]
            if orphans:
                log.warning("%d messages held by a dead worker: published again", len(orphans))
                self._publish(orphans)
                ids = ids + orphans
        return ids

    def republish_lost(self) -> list[int]:
        """Publish the ``queued`` rows whose message has been nowhere (not in the queue, in no
        worker's hands) for a grace; returns their ids. Needs the messages in hand: without
        them every prefetched message would look lost."""
        finder = self._finder()
        if finder is None or self.hands is None:
            return []
        ids = finder.look(self.hands.held_anywhere)
        if ids:
            log.warning(
                "%d queued rows had no message in the broker or any worker's hands for %.0fs "
                "(lost with a killed worker or refiller): published again",
                len(ids),
                finder.grace,
            )
            self._publish(ids)
        return ids

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="imgmod-leases", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        renew_every, sweep_every = renew_interval(self._lease), sweep_interval(self._lease)
        since_renew = since_sweep = 0.0
        tick = min(renew_every, sweep_every)
        while not self._stop.wait(tick):
            since_renew += tick
            since_sweep += tick
            if since_renew >= renew_every:
                since_renew = 0.0
                self._guarded("renewing leases", self.renew)
            if since_sweep >= sweep_every:
                since_sweep = 0.0
                self._guarded("sweeping expired leases", self.sweep)
                self._guarded("looking for lost messages", self.republish_lost)

    def _guarded(self, what: str, step: Callable[[], object]) -> None:
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - the thread must outlive a database outage
            log.warning("%s failed (%s); trying again next round", what, type(exc).__name__)
