"""The Celery task: the only place where the queue, the client and the store meet.

One message = one item id. The task claims the row atomically before it spends a call, so a
redelivered message for a done row, or for a row leased by a live worker, costs nothing. While
the task works on the row, the process's :class:`~worker.heartbeat.LeaseKeeper` renews its
lease; a killed worker's rows are swept back to the queue about one lease later.

A billed answer is parked in Redis the moment it arrives, before the SQL write
(:mod:`worker.durable`): a worker killed at any point can only re-bill the calls it had on the
wire, and a database outage re-bills nothing. What to do after a failed call is decided by
:func:`worker.retry.decide_error`; this module only carries the decision out. The process's
shared resources are the :class:`~worker.runtime.Runtime`, built once from the settings of the
process's app (:func:`worker.app.process_settings`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import redis
from celery import Task
from celery.signals import celeryd_after_setup, task_received, worker_ready, worker_shutdown
from sqlalchemy.exc import SQLAlchemyError

from worker import store
from worker.app import process_app, process_settings
from worker.budget import BudgetUnavailable, Exhausted, Reservation
from worker.durable import park_answer, slot_of, store_answer, take_parked_answer, with_db_retries
from worker.errors import ModerationError, Throttled, TransportError
from worker.limits import LimiterUnavailable
from worker.retry import Retry, backend_wait, countdown, decide_error, look_again_after
from worker.runtime import Runtime, current_runtime, new_owner, process_runtime
from worker.store.budgets import pause_item
from worker.uploads import LocalFileProblem

log = logging.getLogger("imgmod.task")

app = process_app()


def runtime() -> Runtime:
    """This worker process's runtime, built on first use from its app's settings."""
    return process_runtime(process_settings(), publish_again)


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
        delay = backend_wait(self.request.retries)
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
        # Leased elsewhere: look again once the lease is over, never drop (look_again_after).
        log.info("item %s is leased by another worker for %.1fs more; looking again", item_id, left)
        raise _retry_later(self, rt, look_again_after(left))
    with rt.leases.holding(item.id, owner):
        return _moderate_claimed(self, rt, item, owner)


def _moderate_claimed(self: Task, rt: Runtime, item: store.ClaimedItem, owner: str) -> str:
    """The claimed row's attempt: a permit, then a parked answer if there is one, else a call.

    The permit comes first although a parked answer needs none: recoveries are rare, and one
    order keeps one outcome for a Redis that is away ("limiter unavailable": hand the row back).
    """
    claimed_at = time.monotonic()
    slot = slot_of(item)
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
    try:  # a local file: checked and uploaded now (worker.uploads), then sent as OSS triple
        ref = rt.uploads.prepare(item.ref) if item.ref.local_path and rt.uploads else item.ref
    except LocalFileProblem as problem:
        return _fail_now(rt, item, owner, problem.code, problem.message)
    except ModerationError as err:
        return _handle_error(self, rt, item, owner, err)
    held = _reserve(self, rt, item, owner)  # a unit of the budgets, or the row paused
    if isinstance(held, str):
        return held
    started = time.monotonic()
    try:
        with rt.metrics.in_flight():
            response = rt.client.moderate(item.service, ref, item.info_type)
    except ModerationError as err:
        rt.metrics.observe_call(err.code, time.monotonic() - started)
        if rt.budget is not None and not isinstance(err, TransportError):
            rt.budget.give_back(item.job_key, held)  # answered, not billed (a fault may be)
        return _handle_error(self, rt, item, owner, err)
    # Billed: durable first (Redis), bookkeeping after.
    is_parked = park_answer(rt, slot, response)
    rt.metrics.observe_call(200, time.monotonic() - started)
    rt.metrics.billed()
    if rt.ledger is not None:
        rt.ledger.billed(item.job_id, item.service, held)
    rt.limiter.on_success()
    outcome = store_answer(rt, item, owner, response, parked=is_parked)
    risk = response.data.risk_level if response.data else None
    _log_outcome(item, 200, response.request_id, f"{outcome} risk={risk}")
    return outcome


def _reserve(
    self: Task, rt: Runtime, item: store.ClaimedItem, owner: str
) -> Reservation | str | None:
    """A unit of the daily and job budgets before the call (:mod:`worker.budget`); when one is
    used up the row is paused with the reason and ``"paused"`` is the outcome; None: no budget."""
    if rt.budget is None or not rt.budget.applies(item.max_calls):
        return None
    try:
        got = rt.budget.reserve(item.job_id, item.job_key, item.max_calls)
    except BudgetUnavailable as exc:
        return _release_for_later(self, rt, item, owner, "budget", exc)
    if not isinstance(got, Exhausted):
        return got
    reason = got.reason
    with_db_retries(
        "pause_item",
        lambda: pause_item(rt.engine, item.id, owner, reason),
        time.monotonic() + 3600,
    )
    _log_outcome(item, "budget", None, reason)
    return "paused"


def _handle_error(
    self: Task,
    rt: Runtime,
    item: store.ClaimedItem,
    owner: str,
    err: ModerationError,
) -> str:
    code = str(err.code) if err.code is not None else "transport"
    if isinstance(err, Throttled):
        try:
            rt.limiter.on_throttled()
        except LimiterUnavailable as exc:  # advisory: the retry below matters more
            log.warning("could not cut the shared rate: %s", exc)
    # A gateway 502 page counts under "500", a 429 under "403" (worker.retry.decide).
    decision = decide_error(err, item.attempts, rt.policy)
    deadline = time.monotonic() + 3600
    if isinstance(decision, Retry):
        with_db_retries(
            "record_retry",
            lambda: store.record_retry(rt.engine, item.id, owner, code, err.message, str(err)),
            deadline,
        )
        _log_outcome(item, code, err.request_id, f"retry in {decision.delay:.1f}s")
        rt.metrics.retry(code)
        raise _retry_later(self, rt, decision.delay)
    with_db_retries(
        "record_failure",
        lambda: store.record_failure(rt.engine, item.id, owner, code, err.message, str(err)),
        deadline,
    )
    _log_outcome(item, code, err.request_id, f"failed: {err.message}")
    return "failed"


def _fail_now(rt: Runtime, item: store.ClaimedItem, owner: str, code: str, message: str) -> str:
    """Fail the row for good, without a call (a local file gone or changed since enqueue)."""
    with_db_retries(
        "record_failure",
        lambda: store.record_failure(rt.engine, item.id, owner, code, message, message),
        time.monotonic() + 3600,
    )
    _log_outcome(item, code, None, f"failed: {message}")
    return "failed"


def _retry_later(self: Task, rt: Runtime, delay: float) -> Exception:
    """``self.retry`` after about ``delay`` s, never longer than half the visibility timeout
    (:func:`worker.retry.countdown` says why).

    A retry whose publish fails (broker gone) rejects this message: the row is left ``queued``
    (or as it was), and a live worker's orphan finder (or ``imgmod resume``) republishes it.
    """
    result: Exception = self.retry(countdown=countdown(delay, rt.settings.visibility_timeout))
    return result


def _release_for_later(
    self: Task, rt: Runtime, item: store.ClaimedItem, owner: str, what: str, exc: Exception
) -> str:
    """Redis (the limiter, the parked answers) is away: hand the row back and retry later.

    No call is made without a permit, so nothing was billed; the message must not fail (it
    would be acknowledged and the row left ``running`` until its lease ran out).
    """
    delay = backend_wait(self.request.retries)
    with_db_retries(
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


# Celery's own two lines per message ("received", "succeeded in"): the outcome line below
# says the same with the job, code and request id, and each line costs CPU on the hot path.
PER_MESSAGE_LOGGERS = ("celery.worker.strategy", "celery.app.trace")


@celeryd_after_setup.connect(dispatch_uid="imgmod.quiet-per-message")  # type: ignore[untyped-decorator]
def _quiet_per_message_lines(**_: object) -> None:
    """Runs after logging is set up and before the consumer builds its strategies (which
    read the level once): below DEBUG, keep only Celery's warnings per message."""
    verbose = logging.getLogger().level <= logging.DEBUG
    for name in PER_MESSAGE_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)


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
    rt = current_runtime()
    if rt is not None:
        rt.leases.stop()
        if rt.ledger is not None:
            rt.ledger.flush()  # the last second's billed calls into SQL


@task_received.connect(dispatch_uid="imgmod.in-hand")  # type: ignore[untyped-decorator]
def _message_received(request: Any = None, **_: object) -> None:
    """Record each message as in hand the moment the consumer takes it, before any thread
    runs it: prefetched messages and retries waiting for their countdown are the ones a
    killed worker would otherwise keep invisible for the whole visibility timeout."""
    rt = current_runtime()
    if request is None or request.name != "imgmod.moderate" or rt is None:
        return
    try:
        item_id = int(request.args[0])
    except (IndexError, TypeError, ValueError):
        return
    _in_hand(rt, item_id, True)
