"""The one rate limiter every worker thread, process and host shares: GCRA plus AIMD in Redis.

The account has a single QPS cap; calls over it come back as body Code 403 (not billed, but
wasted and retried). Celery's ``rate_limit`` is per worker, so the permits are handed out here,
by one Lua script per permit running inside Redis:

* **GCRA on Redis server time.** Every decision uses ``redis.call('TIME')``, so hosts whose
  clocks disagree still share one schedule. The emission interval is
  ``T = ceil(1e6 / rate)`` microseconds and, with ``burst=1``, consecutive permits are at least
  ``T`` apart. A half-open one-second window ``[a, a + 1 s)`` therefore holds at most
  ``ceil(1e6 / T) <= ceil(rate)`` permits: exactly the cap for an integral QPS such as the
  vendor's 100. A ``burst`` of ``b`` adds at most ``ceil(b - 1)`` to that.
* **Reservations within a horizon.** :meth:`RateLimiter.acquire` books the next free slot when it
  is at most ``horizon`` seconds away and sleeps until it. Slots further out are not booked, so
  a rate cut takes effect within ``horizon``; only one thread per process polls for them, and it
  books for the threads queued behind it too, in one run (:mod:`worker.permit_queue`; the
  slots one run each would have given), so with hundreds of threads a permit costs a fraction
  of a round trip.
* **AIMD shared through Redis.** :meth:`RateLimiter.on_throttled` multiplies the shared rate by
  ``decrease_factor`` (at most once per ``decrease_window``, so a volley of 403s from many
  threads is one signal); a 403 while running at 95% or more of ``qps``, 5 s or more after the
  last cut, only multiplies it by ``near_cap_factor`` (0.9): at the cap a stray 403 is timing
  jitter, and halving the rate for it costs seconds of throughput. Recovery is additive and
  folded into the permit script: the rate is
  ``min(qps, rate_after_cut + step * seconds_since_cut)`` with
  ``step = min(increase_per_second, recover_fraction * rate_after_cut)``, so
  :meth:`RateLimiter.on_success` costs nothing on the hot path. Bounding the step by the rate
  the cut left matters when the real cap is far below ``qps`` (the account's cap is shared with
  other callers): at qps/10 per second the rate overshoots a 10/s cap every second and a third
  of the calls come back 403; at 10% of the cut rate it settles just under the cap.

* **A warm start** (the worker's limiter, ``warm_start``): a schedule with no state in Redis
  (a job's first permit, or the first after the state's TTL) begins as if a cut had just left
  it at ``warm_start`` of its rate, and recovers as above. A 403 within ``decrease_window`` of
  that start belongs to the start's volley and changes nothing. The bound of the first bullet
  holds throughout: a slower rate only widens the interval.
* **A learned margin** (the worker's limiter): permits aim at ``qps`` times a :class:`Margin`
  kept in the same hash, lowered a little by a jitter 403 near that ceiling and regained while
  none comes; a lone one (the first in ``Margin.forgive`` seconds) is forgiven. A lower cap
  (a dense volley, a 403 further down, three mild reactions in a row) halves the rate
  (``worker.limits_lua``); a 403 one of our own late calls explains (:mod:`worker.late_calls`)
  never does: it is a mild reaction, never a strike or a volley.

The configured ``qps`` travels with every call instead of living in Redis: raising
``IMGMOD_QPS`` takes effect on the next permit without flushing anything. If Redis restarts, the
script is reloaded by redis-py (EVALSHA falls back on NOSCRIPT) and lost keys simply mean a fresh
schedule at the configured rate. Redis errors raise :class:`LimiterUnavailable`; a permit is
never granted without Redis having granted it.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.commands.core import Script
from redis.retry import Retry

from worker.late_calls import LateCalls, late_key
from worker.limits_lua import ACQUIRE_LUA, RATE_LUA, THROTTLED_LUA
from worker.limits_margin import NO_MARGIN, Margin
from worker.permit_queue import PermitQueue, Run
from worker.permits import Booking, Grant

log = logging.getLogger(__name__)

# A job's first permits (a fresh schedule in Redis) start at this share of the rate and reach
# it in about half a second (the additive recovery after a cut: 10 % of the rate a second); a
# 403 within the start's decrease_window changes nothing. Why: in a worker's first seconds its
# calls leave late by 7-18 ms (median, 90th percentile; threads, connections and pools all
# starting), by 1-3 ms from the third second on, and calls that grow less late crowd a second
# the service counts: three lone 403s in the first 3 s once read as a lower cap and halved the
# rate. A start at 0.8 (a 2.5 s ramp) cost a quarter of a second of calls per job, 0.8 % of a
# 3,000-image run: 0.952 of the cap against 0.962-0.970 at 0.95, with as few 403s
# (bench/RESULTS.md, fifth session).
WARM_START = 0.95

# The fixed margin of the in-process limiter (no Redis); the doctor's "was the rate cut?" mark.
QPS_MARGIN = 0.98


class LimiterError(Exception):
    """Base of the limiter's errors; no permit was granted."""


class LimiterTimeout(LimiterError):
    """No permit could be had within the caller's timeout; nothing was taken."""


class LimiterUnavailable(LimiterError):
    """Redis could not be asked; no permit was granted. The caller decides: wait, or fail."""


class RateLimiter:
    """A permit per API call, shared by everything that uses the same Redis ``key``.

    Thread-safe; create one per process and share it between threads. ``qps`` is the cap of this
    caller's configuration; ``min_qps`` (default ``qps / 20``) is the floor for rate cuts.
    """

    def __init__(
        self,
        client: redis.Redis,
        key: str = "imgmod:limiter",
        qps: float = 100.0,
        burst: float = 1.0,
        *,
        min_qps: float | None = None,
        decrease_factor: float = 0.5,
        increase_per_second: float | None = None,
        recover_fraction: float = 0.1,
        near_cap_factor: float = 0.9,
        decrease_window: float = 1.0,
        horizon: float = 1.0,
        margin: Margin = NO_MARGIN,
        warm_start: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        if not qps > 0 or math.isinf(qps):
            raise ValueError(f"qps={qps!r} must be a positive number")
        if not burst >= 1:
            raise ValueError(f"burst={burst!r} must be at least 1 (one permit)")
        floor = qps / 20 if min_qps is None else min_qps
        if not 0 < floor <= qps:
            raise ValueError(f"min_qps={min_qps!r} must be above 0 and at most qps={qps:g}")
        if not 0 < decrease_factor < 1:
            raise ValueError(f"decrease_factor={decrease_factor!r} must be between 0 and 1")
        increase = qps / 10 if increase_per_second is None else increase_per_second
        if not increase > 0:
            raise ValueError(f"increase_per_second={increase_per_second!r} must be positive")
        if not decrease_window >= 0:
            raise ValueError(f"decrease_window={decrease_window!r} must not be negative")
        if not horizon > 0:
            raise ValueError(f"horizon={horizon!r} must be positive")
        if not 0 < warm_start <= 1:
            raise ValueError(f"warm_start={warm_start!r} must be above 0 and at most 1")
        self.client = client
        self.key = key
        self.qps = float(qps)
        self.burst = float(burst)
        self.min_qps = float(floor)
        self.decrease_factor = float(decrease_factor)
        self.increase_per_second = float(increase)
        self.recover_fraction = float(recover_fraction)
        self.near_cap_factor = float(near_cap_factor)
        self.decrease_window = float(decrease_window)
        self.horizon = float(horizon)
        self.margin = margin
        self.warm_start = float(warm_start)
        self._rng = rng or random.Random()
        # State outlives a full recovery from the floor, so an idle minute does not forget a cut.
        recovery = (self.qps - self.min_qps) / self.increase_per_second
        self._ttl_ms = int(1000 * max(60.0, 2 * recovery + self.horizon + self.decrease_window))
        self._acquire_script: Script = client.register_script(ACQUIRE_LUA)
        self._throttled_script: Script = client.register_script(THROTTLED_LUA)
        self._rate_script: Script = client.register_script(RATE_LUA)
        self._late = LateCalls(client, key)
        self._lock = threading.Lock()
        self._queue = PermitQueue()
        self._pid = os.getpid()
        self._stats_lock = threading.Lock()
        self._round_trips = 0

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RateLimiter:
        """A limiter on its own client with bounded timeouts: a hung Redis fails in seconds."""
        client = redis.Redis.from_url(
            url,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
            health_check_interval=30,
        )
        return cls(client, **kwargs)

    def __repr__(self) -> str:
        return f"RateLimiter(key={self.key!r}, qps={self.qps:g}, burst={self.burst:g})"

    @property
    def round_trips(self) -> int:
        """Scripts this instance has run so far (for benchmarks and metrics)."""
        return self._round_trips

    def acquire(self, timeout: float | None = None) -> float:
        """Block until a permit is granted; return the seconds waited.

        Raises :class:`LimiterTimeout` (as soon as the earliest possible permit lies beyond
        ``timeout``) and :class:`LimiterUnavailable` (Redis failed).
        """
        return self.acquire_grant(timeout).waited

    def acquire_grant(self, timeout: float | None = None) -> Grant:
        """:meth:`acquire`, also telling which server-time slot the permit was booked for."""
        return self.book(timeout).wait()

    def book(self, timeout: float | None = None) -> Booking:
        """Book a permit without sleeping until it (:class:`Booking`); the same errors as
        :meth:`acquire`. The slot is the caller's whether or not it then calls.

        Without a timeout (a worker's calls) the process's waiting threads are booked for
        together, one script run for as many as the horizon allows
        (:class:`worker.permit_queue.PermitQueue`); with one, alone."""
        if timeout is None:
            return self._local_queue().book(self._book_for_queue)
        start = time.monotonic()
        deadline = start + max(0.0, timeout)
        lock = self._local_lock()
        if not lock.acquire(timeout=max(0.0, deadline - start)):
            raise LimiterTimeout(f"no permit from {self.key!r} within {timeout:g} s")
        try:
            run = self._book(deadline, timeout)
        finally:
            lock.release()
        return Booking(run.slot_us, time.monotonic() + run.wait_us / 1_000_000, start)

    def _book_for_queue(self, count: int) -> Run:
        """Up to ``count`` permits for the queue's waiting threads (one with a timeout
        books between two runs, as it queues on the same lock)."""
        with self._local_lock():
            return self._book(None, None, count)

    def try_acquire(self) -> float:
        """One round trip: ``0.0`` if a permit was granted now, else seconds until one may be."""
        run = self._run_acquire(0)
        return 0.0 if run.booked else run.wait_us / 1_000_000

    def on_throttled(self, slot_us: int = 0) -> None:
        """The service refused the call booked for ``slot_us`` (0: not known) with a 403: cut
        the shared rate, once per ``decrease_window``, unless our own late call explains it."""
        cut, rate = self._call(
            self._throttled_script,
            self.qps,
            self.increase_per_second,
            self.decrease_factor,
            self.min_qps,
            int(self.decrease_window * 1_000_000),
            self._ttl_ms,
            self.recover_fraction,
            self.near_cap_factor,
            *self.margin.args(),
            self.margin.step,
            slot_us,
            int(self.margin.forgive * 1_000_000),
            keys=[self.key, late_key(self.key)],
        )
        late = "a 403 after our own late call"
        if int(cut) == 5:
            log.info(
                "a lone 403 at the full rate, the first in %g s: forgiven, %s stays at %.2f/s",
                self.margin.forgive,
                self.key,
                float(rate),
            )
        elif int(cut) == 3:
            log.info("%s: margin on %s widened, %.2f/s", late, self.key, float(rate))
        elif int(cut) == 4:
            log.info("%s: shared rate on %s cut to %.2f/s (gently)", late, self.key, float(rate))
        elif int(cut) == 2:
            log.info("a 403 at the full rate: margin on %s widened, %.2f/s", self.key, float(rate))
        elif cut:
            log.warning(
                "throttled by the service: shared rate on %s cut to %.2f/s", self.key, float(rate)
            )

    def on_success(self) -> None:
        """A call went through. Free: recovery is computed inside the permit script from the
        time since the last cut (``increase_per_second``), so nothing needs counting here."""

    def note_late(self, grant: Grant) -> None:
        """The call of ``grant`` left ``grant.late`` s after its slot (:mod:`worker.late_calls`)."""
        self._late.note(grant.slot_us, grant.late)

    def current_rate(self) -> float:
        """The permits per second in force now, for this caller's ``qps``."""
        return self.current()[0]

    def current(self) -> tuple[float, float]:
        """(permits per second in force now, the learned margin now) for this caller."""
        rate, margin = self._call(
            self._rate_script,
            self.qps,
            self.increase_per_second,
            self.recover_fraction,
            *self.margin.args(),
        )
        return float(rate), float(margin)

    def _book(self, deadline: float | None, timeout: float | None, count: int = 1) -> Run:
        """Book up to ``count`` slots within the horizon (and the deadline), polling Redis
        until the first is free."""
        horizon_us = int(self.horizon * 1_000_000)
        while True:
            remaining_us = None if deadline is None else int((deadline - time.monotonic()) * 1e6)
            max_wait = horizon_us if remaining_us is None else max(0, min(horizon_us, remaining_us))
            run = self._run_acquire(max_wait, count)
            if run.booked:
                return run
            wait_us = run.wait_us
            if remaining_us is not None and wait_us + max_wait > remaining_us:
                raise LimiterTimeout(
                    f"no permit from {self.key!r} within {timeout:g} s: the next one is "
                    f"{(wait_us + max_wait) / 1e6:.3f} s away"
                )
            # After `wait_us` the next free slot is `max_wait` away: oversleeping by less than
            # that loses no slot, and polling less keeps processes from racing for it.
            pause = (wait_us + self._rng.uniform(0, max_wait / 2)) / 1_000_000
            if deadline is not None:
                pause = min(pause, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)

    def _run_acquire(self, max_wait_us: int, count: int = 1) -> Run:
        """One script run, booking up to ``count`` permits."""
        granted, wait_us, slot_us, booked, interval_us = self._call(
            self._acquire_script,
            self.qps,
            self.increase_per_second,
            self.burst,
            max_wait_us,
            self._ttl_ms,
            self.recover_fraction,
            *self.margin.args(),
            self.warm_start,
            count,
        )
        return Run(int(booked) if granted else 0, int(wait_us), int(slot_us), int(interval_us))

    def _call(self, script: Script, *args: float | int, keys: list[str] | None = None) -> Any:
        with self._stats_lock:
            self._round_trips += 1
        try:
            return script(keys=keys or [self.key], args=[repr(a) for a in args])
        except redis.RedisError as exc:
            raise LimiterUnavailable(
                f"rate limiter {self.key!r} at {self._where()} failed, no permit granted: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def _local_lock(self) -> threading.Lock:
        """The per-process lock of bookers; a fresh one (and a fresh queue) after fork: the
        parent's may be held, or mid-turn."""
        if os.getpid() != self._pid:
            self._lock = threading.Lock()
            self._queue = PermitQueue()
            self._pid = os.getpid()
        return self._lock

    def _local_queue(self) -> PermitQueue:
        """The per-process queue of waiting threads (a fresh one after fork, with the lock)."""
        self._local_lock()
        return self._queue

    def _where(self) -> str:
        """Host, port and db of the client, never its password."""
        kwargs = self.client.connection_pool.connection_kwargs
        if "path" in kwargs:
            return f"unix:{kwargs['path']}"
        return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"
