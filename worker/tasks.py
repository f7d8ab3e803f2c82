"""The Celery task: the only place where the queue, the client and the store meet.

One message = one item id. The task claims the row atomically before it spends a call, so a
redelivered message for a done row, or for a row leased by a live worker, costs nothing. While
the task works on the row, the process's :class:`~worker.heartbeat.LeaseKeeper` renews its
lease; a killed worker's rows are swept back to the queue about one lease later.

A billed answer is parked in Redis the moment it arrives (:mod:`worker.answers`), before the
SQL write, and cleared after it; any later claim of the row stores a parked answer instead of
calling again. So a worker killed at any point can only re-bill the calls it had on the wire,
and a database outage re-bills nothing. An answer the database refuses (not an outage) fails
the row with the reason; it is never retried forever.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
import sqlalchemy as sa
from celery import Task
from celery.signals import task_received, worker_ready, worker_shutdown
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from worker import store
from worker.answers import AnswerSlot, ParkedAnswers
from worker.app import app
from worker.client import ModerationClient
from worker.errors import ModerationError, Throttled, retry_code
from worker.heartbeat import LeaseKeeper, MessagesInHand
from worker.limits import LimiterUnavailable, LocalRateLimiter, RateLimiter, limiter_for
from worker.metrics import NULL_METRICS, Recorder, metrics_for
from worker.params import ImageRef
from worker.results import ModerationResponse, parse_response
from worker.retry import RetryPolicy, backoff_delay
from worker.settings import Settings, load_credentials, load_settings

log = logging.getLogger("imgmod.task")

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
    leases: LeaseKeeper
    answers: ParkedAnswers | None = None  # None without Redis: answers are durable once in SQL
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
        engine = store.make_engine(settings.database_url)
        hands = (
            None
            if r is None
            else MessagesInHand(
                r,
                _deployment(settings),
                f"{HOSTNAME}/{os.getpid()}/{uuid.uuid4().hex[:8]}",
                settings.lease_seconds,
            )
        )
        return cls(
            settings=settings,
            engine=engine,
            client=ModerationClient.from_settings(settings, load_credentials()),
            limiter=limiter,
            policy=RetryPolicy.from_settings(settings, settings.retry_per_code),
            redis=r,
            leases=LeaseKeeper(engine, settings.lease_seconds, publish_again, hands),
            answers=None if r is None else ParkedAnswers(r),
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


def _deployment(settings: Settings) -> str:
    """Names this deployment's database in Redis keys other deployments may share (hashed,
    without its password)."""
    database = sa.make_url(settings.database_url).render_as_string(hide_password=True)
    return hashlib.sha256(database.encode()).hexdigest()[:12]


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


def _slot_of(item: store.ClaimedItem) -> AnswerSlot:
    """Where this row's billed answer is parked: its database's job, the item, the service and
    the reference, so no other database's (or job's) answer can ever be taken for it."""
    return AnswerSlot(
        job_key=item.job_key,
        job_id=item.job_id,
        item_id=item.id,
        service=item.service,
        reference=(
            item.image_url,
            item.oss_bucket,
            item.oss_object,
            item.oss_region,
            item.data_id,
            item.referer,
        ),
    )


def _with_db_retries(rt: Runtime, what: str, fn: Callable[[], T], deadline: float) -> T:
    """Run a store call, waiting out a database outage until ``deadline`` (monotonic).

    Only an outage (:func:`worker.store.is_outage`) is waited out; a refused statement is
    raised at once, as repeating it would only repeat the refusal.
    """
    attempt = 0
    while True:
        try:
            return fn()
        except SQLAlchemyError as exc:
            if not store.is_outage(exc):
                raise
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


def park_answer(rt: Runtime, slot: AnswerSlot, response: ModerationResponse) -> bool:
    """Make a billed answer durable before its SQL write; True when parked in Redis."""
    if rt.answers is None:
        return False
    try:
        rt.answers.park(slot, response.raw)
        return True
    except redis.RedisError as exc:  # Redis down too: the SQL write is all we have
        log.warning("could not park the answer of item %s in Redis (%s)", slot.item_id, exc)
        return False


def take_parked_answer(rt: Runtime, slot: AnswerSlot) -> ModerationResponse | None:
    """The answer an earlier attempt on this very row paid for and did not store, if any.
    Raises ``redis.RedisError`` when Redis cannot say: then calling the API again could pay
    for an answer we already hold."""
    if rt.answers is None:
        return None
    raw = rt.answers.find(slot)
    return None if raw is None else parse_response(raw, http_status=200)


def _refusal(exc: BaseException) -> str:
    """The database's own words, first line only (a PostgreSQL DETAIL may quote the data)."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else 'no message'}"


def store_answer(
    rt: Runtime,
    item: store.ClaimedItem,
    owner: str,
    response: ModerationResponse,
    parked: bool,
) -> str:
    """Write a billed answer; ``"done"``, or ``"failed"`` when the database refuses it.

    An outage is waited out for as long as this process lives (the answer is parked in Redis
    meanwhile, so even a crash costs nothing). A refusal fails the row with the reason and
    leaves the answer parked until it expires: ``imgmod retry`` stores it without a new call
    once the cause is fixed.
    """
    slot = _slot_of(item)

    def write() -> bool:
        return store.record_result(rt.engine, item.id, owner, item.service, response)

    try:
        try:
            write()
        except SQLAlchemyError as exc:
            if not store.is_outage(exc):
                raise
            parked = parked or park_answer(rt, slot, response)
            log.warning(
                "database write failed for item %s; answer %s, retrying the write",
                item.id,
                "parked in Redis" if parked else "held in memory",
            )
            _with_db_retries(rt, "record_result", write, deadline=float("inf"))
    except Exception as exc:  # noqa: BLE001 - refused for good: say so on the row, don't loop
        reason = _refusal(exc)
        _with_db_retries(
            rt,
            "record_failure",
            lambda: store.record_failure(
                rt.engine,
                item.id,
                owner,
                "unstorable",
                "the database refused the billed answer; it stays parked in Redis for a week: "
                f"fix the cause, then `imgmod retry JOB --code unstorable` ({reason})",
                reason,
            ),
            time.monotonic() + 3600,
        )
        log.error("item %s: the database refused its billed answer: %s", item.id, reason)
        return "failed"
    if parked and rt.answers is not None:
        try:
            rt.answers.clear(slot)
        except redis.RedisError:
            # The answer is stored; the parked copy expires, and the row is done meanwhile.
            log.warning("could not clear the parked answer of item %s", item.id)
    return "done"


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
    try:
        return _moderate(self, rt, item_id)
    finally:
        _in_hand(rt, item_id, False)  # recorded in hand when received: _message_received


def _in_hand(rt: Runtime, item_id: int, holding: bool) -> None:
    """Tell Redis this process holds (or let go of) the item's message: if it dies before
    claiming the row, a live worker publishes it again (worker.heartbeat.MessagesInHand)."""
    hands = rt.leases.hands
    if hands is None:
        return
    try:
        if holding:
            hands.took(item_id)
        else:
            hands.done(item_id)
    except redis.RedisError as exc:  # advisory: the lease sweep and stall detection remain
        log.debug("could not record item %s in hand: %s", item_id, exc)


def _moderate(self: Task, rt: Runtime, item_id: int) -> str:
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
    with rt.leases.holding(item.id, owner):
        return _moderate_claimed(self, rt, item, owner)


def _moderate_claimed(self: Task, rt: Runtime, item: store.ClaimedItem, owner: str) -> str:
    """The claimed row's attempt: a permit, then a parked answer if there is one, else a call.

    The permit comes first although a parked answer needs none: recoveries are rare, and one
    order keeps one outcome for a Redis that is away ("limiter unavailable": hand the row back).
    """
    claimed_at = time.monotonic()
    slot = _slot_of(item)
    try:
        rt.metrics.observe_wait(rt.limiter.acquire())
    except LimiterUnavailable as exc:
        return _release_for_later(self, rt, item, owner, "limiter", exc)
    try:
        parked = take_parked_answer(rt, slot)
    except redis.RedisError as exc:
        return _release_for_later(self, rt, item, owner, "redis", exc)
    if parked is not None:
        outcome = store_answer(rt, item, owner, parked, parked=True)
        _log_outcome(
            item, 200, parked.request_id, f"{outcome} (answer recovered, not billed again)"
        )
        return outcome
    if not rt.leases.still_held(item.id):
        log.info("item %s was taken over while waiting for a permit: not calling", item.id)
        return "skipped"
    if time.monotonic() - claimed_at > rt.settings.lease_seconds / 2:
        # A long wait for the permit (a limiter outage, a deep rate cut) with the heartbeat
        # perhaps failing too: make sure the row is still ours, or pay for nothing.
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
    # Billed: durable first (Redis), bookkeeping after.
    is_parked = park_answer(rt, slot, response)
    rt.metrics.observe_call(200, time.monotonic() - started)
    rt.metrics.billed()

    rt.limiter.on_success()
    outcome = store_answer(rt, item, owner, response, parked=is_parked)
    risk = response.data.risk_level if response.data else None
    _log_outcome(item, 200, response.request_id, f"{outcome} risk={risk}")
    return outcome


def _handle_error(
    self: Task,
    rt: Runtime,
    item: store.ClaimedItem,
    owner: str,
    err: ModerationError,
) -> str:
    code = str(err.code) if err.code is not None else "transport"
    key = retry_code(err.code, err.http_status)  # a gateway 502 page counts as "500"
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


def publish_again(ids: Sequence[int]) -> None:
    """Queue swept rows again (one message each; a duplicate costs one no-op claim)."""
    for item_id in ids:
        moderate.apply_async((item_id,))


@worker_ready.connect(dispatch_uid="imgmod.leases.start")  # type: ignore[untyped-decorator]
def _start_lease_keeper(**_: object) -> None:
    """Every worker renews its rows' leases and sweeps dead workers' rows from the start, not
    from its first task: a fresh worker may get no message while a dead one's rows wait."""
    try:
        rt = runtime()
    except Exception as exc:  # noqa: BLE001 - the tasks will report it, with the fix
        log.error("lease keeper not started: %s", exc)
        return
    rt.leases.start()


@worker_shutdown.connect(dispatch_uid="imgmod.leases.stop")  # type: ignore[untyped-decorator]
def _stop_lease_keeper(**_: object) -> None:
    if _runtime is not None:
        _runtime.leases.stop()


@task_received.connect(dispatch_uid="imgmod.in-hand")  # type: ignore[untyped-decorator]
def _message_received(request: Any = None, **_: object) -> None:
    """Record each message as in hand the moment the consumer takes it, before any thread
    runs it: prefetched messages and retries waiting for their countdown are the ones a
    killed worker would otherwise keep invisible for the whole visibility timeout."""
    if request is None or request.name != "imgmod.moderate" or _runtime is None:
        return
    try:
        item_id = int(request.args[0])
    except (IndexError, TypeError, ValueError):
        return
    _in_hand(_runtime, item_id, True)
