"""Prometheus metrics of a worker process: API calls by code, retries, billing, latency, waits.

Off by default (``IMGMOD_METRICS_PORT=0``): the task then holds :data:`NULL_METRICS`, whose
methods do nothing, so the hot path pays one no-op call per event. On, each worker process
serves ``/metrics`` on ``IMGMOD_METRICS_HOST:IMGMOD_METRICS_PORT`` (127.0.0.1 unless told
otherwise: the numbers are not secret, but a scrape endpoint is not for the internet).

What a worker counts (``imgmod_``-prefixed):

* ``api_calls_total{code}``: answers by body Code (or gateway code, or ``timeout``/``connection``/
  ``malformed`` when no answer was read); ``billed_calls_total``: Code 200 answers, the only ones
  the vendor charges for; ``retries_total{code}``: retries scheduled, by the code that caused them;
* ``api_latency_seconds``: one API call, from send to parsed answer (buckets 0.05-10 s, the
  read timeout's range); ``limiter_wait_seconds``: time spent waiting for a global permit;
  ``call_lateness_seconds``: how long after its permit's slot a call left (a thread woken late
  by a busy CPU: one cause of 403s under the cap, docs/operations.md);
  ``in_flight_calls``: calls on the wire now;
* at scrape time, from SQL: ``items{imgmod_job,state}``, rows per state of the jobs still open or
  finished in the last day; and ``limiter_rate``, the shared permits per second in force (below
  ``IMGMOD_QPS`` after a 403 cut). Both are cached for ``cache_seconds`` so frequent scrapes by
  several workers don't load the database. (``imgmod_job``, not ``job``: Prometheus owns ``job``.)

Counters are per process; sum them across workers (``sum by (code) (rate(...))``). The SQL-backed
gauges are the same on every worker: use ``max by (imgmod_job, state)``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# The vendor's answers take tens of ms to seconds (its own image download may take up to 3 s);
# the read timeout is 10 s by default.
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0)
# Waits are ~0 below the cap and up to the backlog's depth / QPS above it.
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A call leaving 10 ms late crowds a second at a margin of 0.99, 15 ms at 0.985.
LATENESS_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25)
CACHE_SECONDS = 15.0
RECENT_JOBS = timedelta(days=1)


def code_label(code: object) -> str:
    """The ``code`` label of an answer: its Code as text, ``transport`` when there was none."""
    return "transport" if code is None else str(code)


class Recorder(Protocol):
    """What the task calls; :class:`Metrics` records, :class:`NullMetrics` does nothing."""

    def observe_call(self, code: object, seconds: float) -> None: ...
    def observe_wait(self, seconds: float, late: float = 0.0) -> None: ...
    def retry(self, code: object) -> None: ...
    def billed(self) -> None: ...
    def in_flight(self) -> AbstractContextManager[Any]: ...
    def watch_limiter(self, current_rate: Callable[[], float]) -> None: ...


class NullMetrics:
    """Metrics off: every method is a no-op."""

    def observe_call(self, code: object, seconds: float) -> None:
        pass

    def observe_wait(self, seconds: float, late: float = 0.0) -> None:
        pass

    def retry(self, code: object) -> None:
        pass

    def billed(self) -> None:
        pass

    def in_flight(self) -> AbstractContextManager[Any]:
        return nullcontext()

    def watch_limiter(self, current_rate: Callable[[], float]) -> None:
        pass


NULL_METRICS = NullMetrics()


class _Cached:
    """A value recomputed at most every ``ttl`` seconds; on error the last value is kept."""

    def __init__(self, compute: Callable[[], Any], ttl: float, what: str) -> None:
        self._compute = compute
        self._ttl = ttl
        self._what = what
        self._lock = threading.Lock()
        self._value: Any = None
        self._at = float("-inf")

    def get(self) -> Any:
        with self._lock:  # one query at a time, however many scrapes arrive together
            if time.monotonic() - self._at >= self._ttl:
                try:
                    self._value = self._compute()
                except Exception as exc:  # noqa: BLE001 - a scrape must not fail the worker
                    log.warning("metrics: could not read %s (%s)", self._what, type(exc).__name__)
                self._at = time.monotonic()
            return self._value


def job_state_counts(engine: Any, now: datetime | None = None) -> list[tuple[str, str, int]]:
    """``(job name, state, rows)`` of the jobs still open or finished within a day."""
    from worker import store

    now = now or datetime.now(timezone.utc)
    rows: list[tuple[str, str, int]] = []
    for job in store.list_jobs(engine):
        if job.finished_at is not None and now - job.finished_at > RECENT_JOBS:
            continue
        for state, n in store.state_counts(engine, job.id).items():
            rows.append((job.name, state, n))
    return rows


class ItemStateCollector(Collector):
    """``imgmod_items{imgmod_job,state}`` from the store at scrape time (cached)."""

    def __init__(self, engine_factory: Callable[[], Any], ttl: float = CACHE_SECONDS) -> None:
        self._engine_factory = engine_factory
        self._engine: Any = None
        self._cached = _Cached(self._read, ttl, "item counts from the database")

    def _read(self) -> list[tuple[str, str, int]]:
        if self._engine is None:
            self._engine = self._engine_factory()
        return job_state_counts(self._engine)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "imgmod_items",
            "Rows per state of jobs open or finished in the last day (from SQL, cached).",
            labels=["imgmod_job", "state"],
        )
        for job, state, n in self._cached.get() or []:
            family.add_metric([job, state], n)
        yield family


class LimiterRateCollector(Collector):
    """``imgmod_limiter_rate``: the shared permits per second in force (cached)."""

    def __init__(self, current_rate: Callable[[], float], ttl: float = CACHE_SECONDS) -> None:
        self._cached = _Cached(current_rate, ttl, "the limiter's rate")

    def collect(self) -> Iterator[GaugeMetricFamily]:
        value = self._cached.get()
        if value is not None:
            yield GaugeMetricFamily(
                "imgmod_limiter_rate",
                "Permits per second the global limiter grants now (IMGMOD_QPS x the learned "
                "margin, lower after a 403 cut).",
                value=float(value),
            )


class BudgetCollector(Collector):
    """``imgmod_budget_{used,left,cap}{budget}``: today's billed calls (UTC) against
    IMGMOD_DAILY_CALL_BUDGET (``budget="daily"``), and each open job's against its
    ``--max-calls`` (``budget="job:NAME"``), from the SQL ledger (cached)."""

    def __init__(self, engine: Any, daily_cap: int, ttl: float = CACHE_SECONDS) -> None:
        self._engine = engine
        self._daily_cap = daily_cap
        self._cached = _Cached(self._read, ttl, "budgets from the ledger")

    def _read(self) -> list[tuple[str, int, int | None]]:
        from worker import store
        from worker.store.ledger import billed_for_job, billed_on

        now = datetime.now(timezone.utc)
        rows: list[tuple[str, int, int | None]] = [
            ("daily", billed_on(self._engine, now.date()), self._daily_cap or None)
        ]
        for job in store.list_jobs(self._engine):  # paused jobs are finished: keep a day
            if job.max_calls is None or (job.finished_at and now - job.finished_at > RECENT_JOBS):
                continue
            rows.append((f"job:{job.name}", billed_for_job(self._engine, job.id), job.max_calls))
        return rows

    def collect(self) -> Iterator[GaugeMetricFamily]:
        used = GaugeMetricFamily(
            "imgmod_budget_used", "Billed calls (SQL ledger).", labels=["budget"]
        )
        cap = GaugeMetricFamily("imgmod_budget_cap", "The budget's calls.", labels=["budget"])
        left = GaugeMetricFamily("imgmod_budget_left", "Calls left.", labels=["budget"])
        for name, spent, limit in self._cached.get() or []:
            used.add_metric([name], spent)
            if limit is not None:
                cap.add_metric([name], limit)
                left.add_metric([name], max(0, limit - spent))
        yield from (used, cap, left)


class Metrics:
    """The metrics of one process, on a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.calls = Counter("imgmod_api_calls", "API answers by Code.", ["code"], registry=r)
        self.retries = Counter(
            "imgmod_retries",
            "Retries scheduled, by the code that caused them.",
            ["code"],
            registry=r,
        )
        self.billed_calls = Counter(
            "imgmod_billed_calls", "Code 200 answers (billed by the vendor).", registry=r
        )
        self.latency = Histogram(
            "imgmod_api_latency_seconds",
            "Seconds per API call, send to parsed answer.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.limiter_wait = Histogram(
            "imgmod_limiter_wait_seconds",
            "Seconds waited for a permit of the global rate limiter.",
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.lateness = Histogram(
            "imgmod_call_lateness_seconds",
            "Seconds after its permit's slot that a call left.",
            buckets=LATENESS_BUCKETS,
            registry=r,
        )
        self.in_flight_calls = Gauge(
            "imgmod_in_flight_calls", "API calls on the wire now.", registry=r
        )
        self._lock = threading.Lock()
        self._store_watched = False
        self._limiter_watched = False
        self._budget_watched = False
        self._server: Any = None
        self._server_pid: int | None = None

    def __repr__(self) -> str:
        serving = self._server is not None and self._server_pid == os.getpid()
        return f"Metrics(serving={serving})"

    # -- events, called by the task

    def observe_call(self, code: object, seconds: float) -> None:
        self.calls.labels(code_label(code)).inc()
        self.latency.observe(seconds)

    def observe_wait(self, seconds: float, late: float = 0.0) -> None:
        self.limiter_wait.observe(seconds)
        self.lateness.observe(late)

    def retry(self, code: object) -> None:
        self.retries.labels(code_label(code)).inc()

    def billed(self) -> None:
        self.billed_calls.inc()

    def in_flight(self) -> AbstractContextManager[Any]:
        return self.in_flight_calls.track_inprogress()

    # -- scrape-time collectors

    def watch_store(self, engine_factory: Callable[[], Any], ttl: float = CACHE_SECONDS) -> None:
        """Export ``imgmod_items`` from the store; the engine is made on the first scrape."""
        with self._lock:
            if not self._store_watched:
                self.registry.register(ItemStateCollector(engine_factory, ttl))
                self._store_watched = True

    def watch_limiter(self, current_rate: Callable[[], float], ttl: float = CACHE_SECONDS) -> None:
        """Export ``imgmod_limiter_rate`` from ``current_rate`` (one Redis call per refresh)."""
        with self._lock:
            if not self._limiter_watched:
                self.registry.register(LimiterRateCollector(current_rate, ttl))
                self._limiter_watched = True

    def watch_budget(self, engine: Any, daily_cap: int) -> None:
        """Export the budgets (:class:`BudgetCollector`), once per process."""
        with self._lock:
            if not self._budget_watched:
                self.registry.register(BudgetCollector(engine, daily_cap))
                self._budget_watched = True

    # -- the endpoint

    def serve(self, host: str, port: int) -> bool:
        """Serve ``/metrics`` on ``host:port`` once per process; False when it could not bind.

        A second call in the same process does nothing (Celery may send its start-up signals
        more than once); a forked child starts its own server.
        """
        with self._lock:
            if self._server is not None and self._server_pid == os.getpid():
                return True
            try:
                self._server, _thread = start_http_server(port, addr=host, registry=self.registry)
            except OSError as exc:
                log.error(
                    "metrics: cannot listen on %s:%s (%s); this worker runs without metrics; "
                    "give each worker on a host its own IMGMOD_METRICS_PORT",
                    host,
                    port,
                    exc,
                )
                return False
            self._server_pid = os.getpid()
            log.info("metrics on http://%s:%s/metrics", host, port)
            return True

    def stop(self) -> None:
        """Close the endpoint (tests; a worker's endpoint lives as long as the worker)."""
        with self._lock:
            if self._server is not None:
                self._server.shutdown()
                self._server.server_close()
            self._server = None
            self._server_pid = None


_process_metrics: Metrics | None = None
_process_lock = threading.Lock()


def process_metrics() -> Metrics:
    """The one :class:`Metrics` of this process (with the process's CPU and memory too)."""
    global _process_metrics
    with _process_lock:
        if _process_metrics is None:
            metrics = Metrics()
            ProcessCollector(registry=metrics.registry)
            _process_metrics = metrics
        return _process_metrics


def metrics_for(port: int) -> Recorder:
    """What the task should record into: the process's metrics when a port is set, else no-ops."""
    return process_metrics() if port else NULL_METRICS


def start_worker_metrics(host: str, port: int, database_url: str) -> Metrics:
    """Serve this process's metrics, including ``imgmod_items`` from ``database_url``."""
    metrics = process_metrics()

    def engine() -> Any:
        from worker import store

        return store.make_engine(database_url)

    metrics.watch_store(engine)
    metrics.serve(host, port)
    return metrics


def connect_worker_signals(host: str, port: int, database_url: str) -> None:
    """Start the endpoint when a Celery worker starts (call once, from the app module).

    ``worker_init`` fires once in the worker's main process, which with the threads pool is
    the only process running tasks. Nothing is connected when ``port`` is 0.
    """
    from celery.signals import worker_init

    worker_init.disconnect(dispatch_uid="imgmod.metrics")  # the last configuration wins
    if not port:
        return

    def on_worker_init(**_: Any) -> None:
        start_worker_metrics(host, port, database_url)

    worker_init.connect(on_worker_init, weak=False, dispatch_uid="imgmod.metrics")
