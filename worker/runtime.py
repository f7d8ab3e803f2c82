"""What one worker process builds once and shares between its threads: the database engine, the
API client, the rate limiter, the parked-answer store, the lease keeper and the metrics.

Built from the settings object the process's Celery app was built from (:mod:`worker.app`),
never from a second read of the environment; its pools are sized from the thread count the
worker really runs (``-c N`` included, see :mod:`worker.app`). Knows nothing of Celery: the
task module passes in how to publish a swept row again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker import store
from worker.budget import Budget, Ledger
from worker.client import ModerationClient
from worker.heartbeat import LeaseKeeper, MessagesInHand
from worker.limits import RateLimiter
from worker.limits_local import LocalRateLimiter, limiter_for
from worker.metrics import NULL_METRICS, Metrics, Recorder, metrics_for
from worker.retry import RetryPolicy
from worker.settings import Settings, load_credentials
from worker.store.answers import ParkedAnswers
from worker.upload_token import describe_upload_token
from worker.uploads import TokenCache, Uploader, oss_client_for

log = logging.getLogger("imgmod.runtime")

HOSTNAME = socket.gethostname()
REDIS_TIMEOUT_S = 5.0  # the parked-answer client: a hung Redis fails the call, not the thread

# A thread holds a database connection only for one short transaction (a claim, a result), so
# 20 standing connections serve many threads; a burst opens more, up to one per thread plus the
# lease keeper and the metrics, and never past 60 per process: PostgreSQL's max_connections is
# shared by every worker host.
STANDING_DATABASE_CONNECTIONS = 20
MAX_DATABASE_CONNECTIONS = 60
# Opened when the worker is ready, before its first messages (store.open_connections says why):
# about as many claims as a fresh process runs at once in the first tenth of a second.
READY_DATABASE_CONNECTIONS = 8

Publish = Callable[[Sequence[int]], None]


def database_pool(threads: int) -> tuple[int, int]:
    """``(pool_size, max_overflow)`` of the engine of a worker running ``threads`` threads."""
    most = min(MAX_DATABASE_CONNECTIONS, threads + 4)
    standing = min(STANDING_DATABASE_CONNECTIONS, most)
    return standing, most - standing


@dataclass
class Runtime:
    """Per-process resources, built once on first use and shared by the worker's threads."""

    settings: Settings
    engine: Engine
    client: ModerationClient
    limiter: RateLimiter | LocalRateLimiter
    policy: RetryPolicy
    redis: Any  # redis.Redis | None
    leases: LeaseKeeper
    answers: ParkedAnswers | None = None  # None without Redis: answers are durable once in SQL
    metrics: Recorder = NULL_METRICS
    uploads: Uploader | None = None  # local files (worker.uploads): built with the runtime
    budget: Budget | None = None  # reservations before calls (worker.budget)
    ledger: Ledger | None = None  # billed calls counted into SQL
    # The attempts of a message's ids run here, side by side: as many threads as the worker's
    # (-c), so as many calls are on the wire as with one id per message. None: one id each.
    calls: ThreadPoolExecutor | None = None

    @classmethod
    def build(cls, settings: Settings, publish_again: Publish) -> Runtime:
        """Everything a worker's threads share; ``publish_again`` queues rows the lease keeper
        swept back from dead workers."""
        limiter = limiter_for(settings)
        r = (
            redis.Redis.from_url(
                settings.limiter_url,
                socket_timeout=REDIS_TIMEOUT_S,
                socket_connect_timeout=REDIS_TIMEOUT_S,
            )
            if settings.limiter_url
            else None
        )
        metrics = metrics_for(settings.metrics_port)
        metrics.watch_limiter(limiter.current_rate)
        standing, overflow = database_pool(settings.worker_concurrency)
        log.info(
            "runtime for %d threads: database pool %d+%d, HTTP pool %d",
            settings.worker_concurrency,
            standing,
            overflow,
            settings.worker_concurrency,
        )
        engine = store.make_engine(settings.database_url, pool_size=standing, max_overflow=overflow)
        hands = (
            None
            if r is None
            else MessagesInHand(r, deployment(settings), new_owner(), settings.lease_seconds)
        )
        client = ModerationClient.from_settings(settings, load_credentials())
        if isinstance(metrics, Metrics):  # budgets used and left, from the ledger
            metrics.watch_budget(engine, settings.billing.daily_call_budget)
        return cls(
            settings=settings,
            engine=engine,
            client=client,
            limiter=limiter,
            policy=RetryPolicy.from_settings(settings),
            redis=r,
            leases=LeaseKeeper(engine, settings.lease_seconds, publish_again, hands),
            answers=None if r is None else ParkedAnswers(r),
            metrics=metrics,
            uploads=uploader_for(settings, client),
            budget=Budget(r, engine, settings.billing.daily_call_budget),
            ledger=Ledger(engine),
            calls=ThreadPoolExecutor(settings.worker_concurrency, thread_name_prefix="imgmod-call")
            if settings.batch.ids_per_message > 1
            else None,
        )


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def process_runtime(settings: Settings, publish_again: Publish) -> Runtime:
    """This process's runtime, built from ``settings`` by the first caller; later calls return
    the same one (whatever they pass)."""
    global _runtime
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None:
                _runtime = Runtime.build(settings, publish_again)
    return _runtime


def uploader_for(settings: Settings, client: ModerationClient) -> Uploader:
    """The process's uploader of local files: one token cache (DescribeUploadToken through
    ``client``), uploads to the API's region, internal endpoint with IMGMOD_VPC=1."""
    tokens = TokenCache(
        lambda: describe_upload_token(client),
        lambda token: oss_client_for(token, settings.region, settings.vpc, settings.allow_http),
    )
    return Uploader(tokens, settings.region, settings.upload_concurrency)


def current_runtime() -> Runtime | None:
    """The runtime if this process built one (signal handlers must not build it)."""
    return _runtime


def deployment(settings: Settings) -> str:
    """Names this deployment's database in Redis keys other deployments may share (hashed,
    without its password)."""
    database = sa.make_url(settings.database_url).render_as_string(hide_password=True)
    return hashlib.sha256(database.encode()).hexdigest()[:12]


def new_owner() -> str:
    """A name for one claim (or one process's hands): host, pid and a random tail."""
    return f"{HOSTNAME}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
