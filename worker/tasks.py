"""The Celery task: the only place where the queue, the client and the store meet.

One message = one item id. The task claims the row atomically before it spends a call, so a
redelivered message for a done row, or for a row leased by a live worker, costs nothing. Only
the window between "the API answered" and "the row is done" can bill twice, and that window is
protected too: if the database write fails, the answer is parked in Redis and written later,
and a later attempt finds it there instead of calling again.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from celery import Task
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from worker import store
from worker.app import app
from worker.client import ModerationClient
from worker.errors import ModerationError, Throttled, retry_code
from worker.limits import LimiterUnavailable, LocalRateLimiter, RateLimiter, limiter_for
from worker.metrics import NULL_METRICS, Recorder, metrics_for
from worker.params import ImageRef
from worker.results import ModerationResponse, parse_response
from worker.retry import RetryPolicy, backoff_delay
from worker.settings import Settings, load_credentials, load_settings

log = logging.getLogger("imgmod.task")

PARKED_KEY = "imgmod:parked-answers"
LEASE_GRACE_S = 1.0  # past another worker's lease end before looking again (clock skew, commit)
HOSTNAME = socket.gethostname()
REDIS_TIMEOUT_S = 5.0  # the parked-answer client: a hung Redis fails the call, not the thread
T = TypeVar("T")


@dataclass
class Runtime:
    """Per-process resources, built once on first use and shared by the worker's threads."""

    settings: Settings
    engine: Engine
    client: ModerationClient
    limiter: RateLimiter | LocalRateLimiter
    policy: RetryPolicy
    redis: Any  # redis.Redis | None
    metrics: Recorder = NULL_METRICS

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
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
        return cls(
            settings=settings,
            engine=store.make_engine(settings.database_url),
            client=ModerationClient.from_settings(settings, load_credentials()),
            limiter=limiter,
            policy=RetryPolicy.from_settings(settings, settings.retry_per_code),
            redis=r,
            metrics=metrics,
        )


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None:
                _runtime = Runtime.build(load_settings())
    return _runtime


def new_owner() -> str:
    return f"{HOSTNAME}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


def _ref_of(item: store.ClaimedItem) -> ImageRef:
    return ImageRef(
        image_url=item.image_url,
        oss_bucket=item.oss_bucket,
        oss_object=item.oss_object,
        oss_region=item.oss_region,
        data_id=item.data_id,
        referer=item.referer,
    )


def _with_db_retries(rt: Runtime, what: str, fn: Callable[[], T], deadline: float) -> T:
    """Run a store call, waiting out a database outage until ``deadline`` (monotonic)."""
    attempt = 0
    while True:
        try:
            return fn()
        except SQLAlchemyError as exc:
            attempt += 1
            if time.monotonic() >= deadline:
                raise
            delay = backoff_delay(attempt, 0.2, 5.0)
            log.warning(
                "database unavailable during %s (%s); retrying in %.1fs",
                what,
                type(exc).__name__,
                delay,
            )
            time.sleep(delay)


def park_answer(rt: Runtime, item_id: int, response: ModerationResponse) -> bool:
    """Keep a billed answer in Redis while the database is away; True when parked."""
    if rt.redis is None:
        return False
    try:
        rt.redis.hset(PARKED_KEY, str(item_id), json.dumps(dict(response.raw)))
        return True
    except Exception:  # noqa: BLE001 - Redis down too: the in-process retry is all we have
        log.exception("could not park the answer of item %s in Redis", item_id)
        return False


def take_parked_answer(rt: Runtime, item_id: int) -> ModerationResponse | None:
    """The answer a dead attempt parked, if any. Raises ``redis.RedisError`` when Redis cannot
    say: then calling the API again could pay for an answer we already hold."""
    if rt.redis is None:
        return None
    raw = rt.redis.hget(PARKED_KEY, str(item_id))
    return None if raw is None else parse_response(raw, http_status=200)


def store_answer(
    rt: Runtime, item: store.ClaimedItem, owner: str, response: ModerationResponse
) -> None:
    """Write a billed answer; never give up on it while this process lives."""

    def write() -> bool:
        return store.record_result(rt.engine, item.id, owner, item.service, response)

    try:
        write()
    except SQLAlchemyError:
        parked = park_answer(rt, item.id, response)
        log.warning(
            "database write failed for item %s; answer %s, retrying the write",
            item.id,
            "parked in Redis" if parked else "held in memory",
        )
        _with_db_retries(rt, "record_result", write, deadline=float("inf"))
    if rt.redis is not None and item.attempts > 1:
        try:
            rt.redis.hdel(PARKED_KEY, str(item.id))
        except redis.RedisError:
            # The answer is stored; a stale parked copy only saves a later, redundant attempt.
            log.warning("could not clear the parked answer of item %s", item.id)


def _log_outcome(item: store.ClaimedItem, code: object, request_id: str | None, what: str) -> None:
    log.info(
        "job=%s item=%s code=%s attempts=%s request_id=%s %s",
        item.job_id,
        item.id,
        code,
        item.attempts,
        request_id or "-",
        what,
        extra={
            "job": item.job_id,
            "item": item.id,
            "code": str(code),
            "attempts": item.attempts,
            "request_id": request_id,
        },
    )


@app.task(bind=True, name="imgmod.moderate", acks_late=True, max_retries=None)  # type: ignore[untyped-decorator]
def moderate(self: Task, item_id: int) -> str:
    """Moderate one item; returns the state it left the row in (for logs and tests)."""
    rt = runtime()
    owner = new_owner()
    try:
        item = store.claim_item(rt.engine, item_id, owner, rt.settings.lease_seconds)
    except SQLAlchemyError as exc:
        delay = backoff_delay(self.request.retries + 1, 1.0, 30.0)
        log.warning(
            "database unavailable claiming item %s (%s); retry in %.1fs",
            item_id,
            type(exc).__name__,
            delay,
        )
        raise _retry_later(self, rt, delay) from None
    claimed_at = time.monotonic()
    if item is None:
        try:
            left = store.lease_left(rt.engine, item_id)
        except SQLAlchemyError:
            left = rt.settings.lease_seconds  # cannot tell: look again later rather than drop
        if left is None:
            log.debug("item %s is done, failed or rejected: nothing to do", item_id)
            return "skipped"
        # Leased elsewhere. Dropping this message would strand the row if that worker is dead
        # (a message restored a moment before the dead worker's lease ran out): look again
        # once the lease is over; by then a live owner has closed the row and this is a no-op.
        log.info("item %s is leased by another worker for %.1fs more; looking again", item_id, left)
        raise _retry_later(self, rt, left + LEASE_GRACE_S)

    try:
        parked = take_parked_answer(rt, item.id) if item.attempts > 1 else None
    except redis.RedisError as exc:
        return _release_for_later(self, rt, item, owner, "redis", exc)
    if parked is not None:
        store_answer(rt, item, owner, parked)
        _log_outcome(item, 200, parked.request_id, "done (answer recovered, not billed again)")
        return "done"

    try:
        rt.metrics.observe_wait(rt.limiter.acquire())
    except LimiterUnavailable as exc:
        return _release_for_later(self, rt, item, owner, "limiter", exc)
    if time.monotonic() - claimed_at > rt.settings.lease_seconds / 2:
        # A long wait for the permit (a limiter outage, a deep rate cut): the lease may have run
        # out and another worker taken the row over. Renew it, or pay for nothing.
        try:
            ours = store.extend_lease(rt.engine, item.id, owner, rt.settings.lease_seconds)
        except SQLAlchemyError:
            raise _retry_later(self, rt, rt.settings.lease_seconds) from None
        if not ours:
            log.info("item %s was taken over while waiting for a permit: not calling", item.id)
            return "skipped"
    started = time.monotonic()
    try:
        with rt.metrics.in_flight():
            response = rt.client.moderate(item.service, _ref_of(item), item.info_type)
    except ModerationError as err:
        rt.metrics.observe_call(err.code, time.monotonic() - started)
        return _handle_error(self, rt, item, owner, err)
    rt.metrics.observe_call(200, time.monotonic() - started)
    rt.metrics.billed()

    rt.limiter.on_success()
    store_answer(rt, item, owner, response)
    _log_outcome(
        item,
        200,
        response.request_id,
        f"done risk={response.data.risk_level if response.data else None}",
    )
    return "done"


def _handle_error(
    self: Task,
    rt: Runtime,
    item: store.ClaimedItem,
    owner: str,
    err: ModerationError,
) -> str:
    code = str(err.code) if err.code is not None else "transport"
    key = retry_code(err.code)
    if isinstance(err, Throttled):
        try:
            rt.limiter.on_throttled()
        except LimiterUnavailable as exc:  # advisory: the retry below matters more
            log.warning("could not cut the shared rate: %s", exc)
    deadline = time.monotonic() + 3600
    if err.retryable and rt.policy.should_retry(key, item.attempts):
        delay = rt.policy.delay(item.attempts)
        _with_db_retries(
            rt,
            "record_retry",
            lambda: store.record_retry(rt.engine, item.id, owner, code, err.message, str(err)),
            deadline,
        )
        _log_outcome(item, code, err.request_id, f"retry in {delay:.1f}s")
        rt.metrics.retry(code)
        raise _retry_later(self, rt, delay)
    _with_db_retries(
        rt,
        "record_failure",
        lambda: store.record_failure(rt.engine, item.id, owner, code, err.message, str(err)),
        deadline,
    )
    _log_outcome(item, code, err.request_id, f"failed: {err.message}")
    return "failed"


def _retry_later(self: Task, rt: Runtime, delay: float) -> Exception:
    """``self.retry`` after about ``delay`` s, never longer than half the visibility timeout.

    The retry message waits in the worker unacknowledged; held past the broker's visibility
    timeout, kombu would restore it to the queue while it is still held, and each restore would
    add one more copy. Waiting less than asked only costs an early look.
    A retry whose publish fails (broker gone) rejects this message: the row is left ``queued``
    (or as it was), and ``imgmod resume`` / the stall detection of ``imgmod run`` republish it.
    """
    countdown = min(delay, max(1.0, rt.settings.visibility_timeout / 2))
    result: Exception = self.retry(countdown=countdown)
    return result


def _release_for_later(
    self: Task, rt: Runtime, item: store.ClaimedItem, owner: str, what: str, exc: Exception
) -> str:
    """Redis (the limiter, the parked answers) is away: hand the row back and retry later.

    No call is made without a permit, so nothing was billed; the message must not fail (it
    would be acknowledged and the row left ``running`` until its lease ran out).
    """
    delay = backoff_delay(self.request.retries + 1, 1.0, 30.0)
    _with_db_retries(
        rt,
        "record_retry",
        lambda: store.record_retry(
            rt.engine, item.id, owner, what, f"{what} unavailable", type(exc).__name__
        ),
        time.monotonic() + 3600,
    )
    _log_outcome(item, what, None, f"{what} unavailable ({type(exc).__name__}); retry later")
    raise _retry_later(self, rt, delay)
