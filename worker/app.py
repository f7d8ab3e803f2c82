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
  that gap: its row stays ``queued`` for ``imgmod resume`` or ``imgmod run``'s stall detection.
"""

from __future__ import annotations

from celery import Celery

from worker.settings import load_settings

QUEUE = "imgmod"


def make_app() -> Celery:
    settings = load_settings()
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
        broker_pool_limit=settings.worker_concurrency + 8,
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


app = make_app()
