"""The Celery app: broker settings chosen for long nightly jobs of I/O-bound calls.

- late acks + reject-on-worker-lost: a message is acknowledged only after its row reached a
  state, so a killed worker's message comes back;
- prefetch 1: a thread holds one message, the rest stay in Redis for other hosts;
- ``visibility_timeout`` (IMGMOD_VISIBILITY_TIMEOUT, 600 s) bounds how long a dead worker's
  messages stay invisible; it must exceed the longest a live worker holds one (a call, or a
  retry's countdown, which worker.tasks caps at half of it). ``unacked_restore_interval`` 5 s
  with throttle 1 makes kombu sweep for them every 5 s instead of every ~100 s. The sweep runs
  on a live consumer's event loop timer: the thread pool uses that loop (Celery's asynloop), so
  a dead worker's messages come back within the timeout plus 5 s (tests/faults). kombu pops a
  message before recording it as unacknowledged, so a SIGKILL can lose the one message in
  that gap: its row stays ``queued`` with no message, and a live worker's orphan finder
  (:class:`worker.orphans.OrphanFinder`) republishes it within about 30 s.

One process, one app: :func:`process_app` builds it on first use, from the settings the caller
already holds (the CLI) or from the environment (``celery -A worker worker``, which asks for
``worker.app``), and hands the same app to everyone after. Pool sizes follow the thread count the
worker really runs: ``-c N`` replaces IMGMOD_WORKER_CONCURRENCY in the process's settings at
``worker_init``, before any pool exists: the broker pool here, the database and HTTP pools in
:mod:`worker.runtime` and :mod:`worker.client`.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from celery import Celery
from celery.signals import worker_init

from worker.settings import Settings, load_settings

QUEUE = "imgmod"

# Broker connections beyond one per thread (each may publish a retry at once): the consumer,
# the publishing window's refill loop, the lease keeper's republishing.
BROKER_SPARE_CONNECTIONS = 8


def broker_pool_limit(threads: int) -> int:
    """Celery's ``broker_pool_limit`` for a worker running ``threads`` threads."""
    return threads + BROKER_SPARE_CONNECTIONS


def make_app(settings: Settings) -> Celery:
    """A Celery app for ``settings``; a process uses one (:func:`process_app`), tests may build
    their own."""
    app = Celery("imgmod", broker=settings.broker_url, include=["worker.tasks"])
    transport_options: dict[str, object] = {
        "visibility_timeout": settings.visibility_timeout,
        "unacked_restore_interval": 5,
        "unacked_restore_throttle": 1,
        # Without these a broker that accepts TCP but never answers hangs a publish forever.
        # The consumer's BRPOP (1 s server-side) is read by the event loop, not bounded by them.
        "socket_connect_timeout": settings.broker_timeout,
        "socket_timeout": settings.broker_timeout,
    }
    if settings.broker_url.startswith("sqla+"):
        transport_options = {}
    if settings.broker_url.startswith("redis://"):  # one client per channel (worker.broker)
        app.conf.broker_transport = "worker.broker:Transport"
    app.conf.update(
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_pool="threads",
        worker_concurrency=settings.worker_concurrency,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_connection_retry=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_connection_timeout=settings.broker_timeout,
        broker_transport_options=transport_options,
        broker_pool_limit=broker_pool_limit(settings.worker_concurrency),
        task_create_missing_queues=True,
    )
    # Worker processes only (the signals never fire in the CLI): our log format, metrics, and
    # the thread that keeps the broker's publishing window topped up from SQL.
    from worker import logs, metrics, window

    window.connect_worker_signals(app, settings)
    logs.connect_worker_signals(settings.log_level, settings.log_format)
    metrics.connect_worker_signals(
        settings.metrics_host, settings.metrics_port, settings.database_url
    )
    return app


_lock = threading.RLock()
_app: Celery | None = None
_settings: Settings | None = None


def process_app(settings: Settings | None = None) -> Celery:
    """This process's Celery app: the first call builds it, every later call returns it.

    The first caller's ``settings`` build it (the CLI passes those it loaded); with none, the
    environment is read, once (a worker process, where Celery asks for ``worker.app``).
    """
    global _app, _settings
    with _lock:
        if _app is None:
            _settings = settings if settings is not None else load_settings()
            _app = make_app(_settings)
        return _app


def process_settings() -> Settings:
    """The settings this process's app runs with (building the app if none exists yet); in a
    worker, with the thread count it really runs."""
    process_app()
    assert _settings is not None
    return _settings


@worker_init.connect(dispatch_uid="imgmod.app.concurrency")  # type: ignore[untyped-decorator]
def _concurrency_in_effect(sender: Any = None, **_: object) -> None:
    """``imgmod worker -c N`` (Celery's ``--concurrency``) runs N threads, whatever
    IMGMOD_WORKER_CONCURRENCY says: size the broker, database and HTTP pools for N. Runs before
    the broker pool and the runtime exist, so both are built with the sizes said here."""
    global _settings
    app, threads = _app, getattr(sender, "concurrency", None)
    if app is None or _settings is None or getattr(sender, "app", None) is not app:
        return  # not this process's app (a test's own), or a worker of another app
    assert app is not None
    if isinstance(threads, int) and threads > 0 and threads != _settings.worker_concurrency:
        _settings = dataclasses.replace(_settings, worker_concurrency=threads)
        app.conf.update(broker_pool_limit=broker_pool_limit(threads))


def __getattr__(name: str) -> Celery:
    """``worker.app.app``: the process's app, built on first use (``celery -A worker``)."""
    if name == "app":
        return process_app()
    raise AttributeError(f"module 'worker.app' has no attribute {name!r}")
