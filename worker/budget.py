"""Budgets that hold: a unit is reserved in Redis before every call, and given back when the
answer is not billable, so billed calls never pass a job's ``--max-calls`` nor the account's
``IMGMOD_DAILY_CALL_BUDGET``, however many threads on however many hosts call at once.

* **One script per reservation** (:data:`worker.budget_lua.RESERVE_LUA`): the day's counter
  (``imgmod:budget:day:<UTC day>``, shared by every job, worker and host on the limiter's
  Redis, the day taken from the Redis server's clock) and the job's counter
  (``imgmod:budget:job:<job key>``) are checked and incremented together, or not at all. A
  call that would pass a cap is never sent: the worker pauses its row instead
  (:func:`worker.store.budgets.pause_item`) with the reason people read.
* **Given back when not billable.** The vendor bills Code-200 answers only; a call the service
  answered with another code gives its unit back (:meth:`Budget.give_back`). A transport fault
  (timeout, reset) keeps it: the service may have answered 200 where we could not hear it, and
  the budget must hold even then.
* **Recorded in SQL.** Each billed answer is counted into ``billed_calls`` (UTC day, job,
  service) by :class:`Ledger`, in one upsert per second per process rather than one per call
  (the hot path stays one Redis round trip). A counter Redis lost (a restart without
  persistence) is seeded from there, never from zero; calls in flight at that moment, and at
  most one second of a killed worker's unflushed counts, are what the seed can miss.
* **Free when unused.** Without a daily budget and without a job cap no script runs at all.

The pure parts (:func:`left`, :func:`reason`, :func:`day_of`, :func:`usage`) are tested as
units; the scripts against a real Redis.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

import redis
from redis.commands.core import Script
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from worker.budget_lua import RELEASE_LUA, RESERVE_LUA, SEED_LUA
from worker.limits import LimiterUnavailable
from worker.store.ledger import billed_for_job, billed_on, record_billed

log = logging.getLogger("imgmod.budget")

PREFIX = "imgmod:budget"
DAY_TTL_S = 3 * 86400  # a day's counter outlives its day (status reads yesterday's too)
JOB_TTL_S = 30 * 86400  # an idle job's counter expires; a later reservation seeds it from SQL
EPOCH = date(1970, 1, 1)


class BudgetUnavailable(LimiterUnavailable):
    """Redis could not be asked: no unit was reserved and no call may be made (the caller
    hands the row back, as when the limiter is away)."""


# --------------------------------------------------------------------------- the pure core


@dataclass(frozen=True)
class Reservation:
    """A unit taken before a call: which counters it came from, on which UTC day."""

    day: int  # days since 1970-01-01, the Redis server's
    daily: bool
    job: bool


@dataclass(frozen=True)
class Exhausted:
    """No unit left: ``which`` budget (``daily`` or ``job``) has ``cap`` calls, all used."""

    which: str
    cap: int

    @property
    def reason(self) -> str:
        return reason(self.which, self.cap)


def reason(which: str, cap: int) -> str:
    """The line a paused row carries: ``paused: daily budget 50,000 reached``."""
    what = "daily budget" if which == "daily" else "job budget (--max-calls)"
    return f"paused: {what} {cap:,} reached"


def left(cap: int | None, used: int) -> int | None:
    """Calls still allowed under ``cap`` (None: no cap); never negative."""
    return None if not cap else max(0, cap - used)


def day_of(number: int) -> date:
    """The UTC date of a day number (days since the epoch)."""
    return EPOCH + timedelta(days=number)


def today() -> int:
    """This host's UTC day number (for reads; reservations use the Redis server's clock)."""
    return (datetime.now(timezone.utc).date() - EPOCH).days


@dataclass(frozen=True)
class Usage:
    """One budget's state for people: cap (None: none), used, left."""

    cap: int | None
    used: int

    @property
    def left(self) -> int | None:
        return left(self.cap, self.used)

    def line(self, what: str) -> str:
        if self.cap is None:
            return f"{what}: {self.used:,} calls billed, no cap"
        return f"{what}: {self.used:,} of {self.cap:,} calls used, {self.left:,} left"


def usage(cap: int | None, used: int) -> Usage:
    return Usage(cap or None, used)


# --------------------------------------------------------------------------- Redis


class Budget:
    """The reservations of one worker process, shared by its threads."""

    def __init__(self, client: Any, engine: Engine, daily_cap: int, prefix: str = PREFIX) -> None:
        self.client = client  # redis.Redis, or None: no budget can be enforced (demo)
        self.engine = engine
        self.daily_cap = int(daily_cap)
        self.prefix = prefix
        self._reserve: Script | None = None
        self._seed: Script | None = None
        self._release: Script | None = None
        self._warned = False
        if client is not None:
            self._reserve = client.register_script(RESERVE_LUA)
            self._seed = client.register_script(SEED_LUA)
            self._release = client.register_script(RELEASE_LUA)

    def applies(self, max_calls: int | None) -> bool:
        """Whether a call of a job with ``max_calls`` needs a reservation at all. Without Redis
        (the embedded demo broker) no budget can be shared, so none is enforced: said once."""
        wanted = bool(self.daily_cap or max_calls)
        if wanted and self.client is None and not self._warned:
            self._warned = True
            log.warning("no Redis (IMGMOD_LIMITER_URL): budgets are not enforced by this worker")
        return wanted and self.client is not None

    def job_key(self, job_key: str) -> str:
        return f"{self.prefix}:job:{job_key}"

    def day_key(self, day: int) -> str:
        return f"{self.prefix}:day:{day}"

    def reserve(
        self, job_id: int, job_key: str, max_calls: int | None
    ) -> Reservation | Exhausted | None:
        """Take one unit for a call of the job, or say which budget is used up; None when no
        budget applies. Raises :class:`BudgetUnavailable` when Redis fails (no unit taken)."""
        if not self.applies(max_calls) or self._reserve is None:
            return None
        job_cap = int(max_calls or 0)
        keys = [f"{self.prefix}:day:", self.job_key(job_key)]
        for _ in range(3):  # at most: seed the day, seed the job, reserve
            verdict, day, _used_day, _used_job = self._run(
                self._reserve, keys, [self.daily_cap, job_cap, DAY_TTL_S, JOB_TTL_S]
            )
            if verdict == 1:
                return Reservation(int(day), bool(self.daily_cap), bool(job_cap))
            if verdict == 0:
                return Exhausted("daily", self.daily_cap)
            if verdict == 2:
                return Exhausted("job", job_cap)
            if verdict == -1:
                self._seed_counter(self.day_key(int(day)), DAY_TTL_S, billed_on, day_of(int(day)))
            else:
                self._seed_counter(keys[1], JOB_TTL_S, billed_for_job, job_id)
        raise BudgetUnavailable("budget counters could not be seeded; no call made")

    def give_back(self, job_key: str, reservation: Reservation | None) -> None:
        """The call was not billed: return its unit (best effort; a Redis error keeps it)."""
        if reservation is None or self._release is None:
            return
        keys = ([self.day_key(reservation.day)] if reservation.daily else []) + (
            [self.job_key(job_key)] if reservation.job else []
        )
        try:
            self._release(keys=keys, args=[])
        except redis.RedisError as exc:  # erring on the safe side: the unit stays spent
            log.warning("could not give a budget unit back: %s", type(exc).__name__)

    def set_job_used(self, job_key: str, used: int) -> None:
        """Set the job's counter to what SQL recorded (``imgmod resume`` after a cap change)."""
        if self.client is not None:
            try:
                self.client.set(self.job_key(job_key), used, ex=JOB_TTL_S)
            except redis.RedisError as exc:
                raise BudgetUnavailable(
                    f"budget counters unavailable: {type(exc).__name__}"
                ) from None

    def _seed_counter(self, key: str, ttl: int, recorded: Any, arg: Any) -> None:
        """Set a missing counter to what the ledger recorded (``recorded(engine, arg)``)."""
        try:
            value = int(recorded(self.engine, arg))
        except SQLAlchemyError as exc:
            raise BudgetUnavailable(
                f"cannot read the ledger to seed {key}: {type(exc).__name__}"
            ) from None
        assert self._seed is not None
        self._run(self._seed, [key], [value, ttl])

    def _run(self, script: Script, keys: list[str], args: list[int]) -> Any:
        try:
            return script(keys=keys, args=args)
        except redis.RedisError as exc:
            raise BudgetUnavailable(f"budget counters unavailable: {type(exc).__name__}") from None


# --------------------------------------------------------------------------- the SQL ledger


class Ledger:
    """Billed answers counted in memory and written to ``billed_calls`` once a second by a
    daemon thread (one upsert per (day, job, service) seen), and at :meth:`flush`."""

    def __init__(self, engine: Engine, every: float = 1.0) -> None:
        self.engine = engine
        self.every = every
        self._counts: Counter[tuple[int, int, str]] = Counter()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def billed(self, job_id: int, service: str, reservation: Reservation | None) -> None:
        """Count one billed answer (on the reservation's day, else this host's UTC day)."""
        day = reservation.day if reservation is not None else today()
        with self._lock:
            self._counts[(day, job_id, service)] += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="imgmod-ledger", daemon=True
                )
                self._thread.start()

    def flush(self) -> None:
        """Write what is counted; what cannot be written stays counted for the next flush."""
        with self._lock:
            counts, self._counts = self._counts, Counter()
        failed: Counter[tuple[int, int, str]] = Counter()
        for (day, job_id, service), calls in counts.items():
            try:
                record_billed(self.engine, job_id, service, day_of(day), calls)
            except SQLAlchemyError as exc:
                failed[(day, job_id, service)] += calls
                log.warning("billed calls not recorded yet (%s); next flush", type(exc).__name__)
        if failed:
            with self._lock:
                self._counts.update(failed)

    def _loop(self) -> None:
        while True:
            time.sleep(self.every)
            self.flush()
