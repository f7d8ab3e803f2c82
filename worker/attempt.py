"""One claimed row's attempt: a permit, a parked answer or a call, and what follows from it.

Called by the task (:mod:`worker.tasks`) for each row of a message it claimed; knows nothing of
Celery: an attempt to be made again later raises :class:`~worker.retry.Later`, and the task
decides how the id goes back. A billed answer is parked in Redis the moment it arrives, before
its SQL write (:mod:`worker.durable`); the answers of a message's rows are written together
(:class:`Billed`), one transaction per message rather than per image.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis
from sqlalchemy.exc import SQLAlchemyError

from worker import store
from worker.budget import BudgetUnavailable, Exhausted, Reservation
from worker.durable import (
    park_answer,
    slot_of,
    store_answer,
    store_answers,
    take_parked_answer,
    take_parked_answers,
    with_db_retries,
)
from worker.errors import ModerationError, Throttled, TransportError
from worker.limits import LimiterUnavailable
from worker.results import ModerationResponse
from worker.retry import Later, Retry, backend_wait, decide_error
from worker.runtime import Runtime
from worker.store.budgets import pause_item
from worker.uploads import LocalFileProblem

log = logging.getLogger("imgmod.task")


@dataclass
class Billed:
    """A message's billed answers, parked in Redis and waiting for one SQL transaction."""

    answers: list[tuple[store.ClaimedItem, ModerationResponse]] = field(default_factory=list)

    def store(self, rt: Runtime, owner: str) -> dict[int, str]:
        """Write them (:func:`worker.durable.store_answers`), log each; their outcomes."""
        outcomes = store_answers(rt, owner, self.answers)
        for (item, response), outcome in zip(self.answers, outcomes, strict=True):
            risk = response.data.risk_level if response.data else None
            log_outcome(item, 200, response.request_id, f"{outcome} risk={risk}")
        return {item.id: outcome for (item, _), outcome in zip(self.answers, outcomes, strict=True)}


def log_outcome(item: store.ClaimedItem, code: object, request_id: str | None, what: str) -> None:
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


LOOK_UP = object()  # no answer looked up for the row yet: attempt() asks Redis itself


def parked_answers(rt: Runtime, items: Sequence[store.ClaimedItem]) -> dict[int, object]:
    """The answers parked for a message's claimed rows, looked up in one round trip before
    they go to the call threads (each then skips its own ``GET``): by item id, None for a row
    with none. Nothing that fails here is decided here: the result is empty and each row asks
    on its own in :func:`attempt`, where a Redis that is away hands the row back as always
    (a shortcut must not turn one row's trouble into the whole message's)."""
    if len(items) < 2:
        return {}
    try:
        found = take_parked_answers(rt, [slot_of(item) for item in items])
    except Exception as exc:  # noqa: BLE001 - each row's own look-up decides, as without this
        log.debug("parked answers of %d items not looked up at once: %s", len(items), exc)
        return {}
    return {item.id: answer for item, answer in zip(items, found, strict=True)}


def attempt(
    rt: Runtime,
    item: store.ClaimedItem,
    owner: str,
    retries: int,
    billed: Billed | None = None,
    parked: object = LOOK_UP,
) -> str:
    """The claimed row's attempt: a permit, then a parked answer if there is one, else a call;
    returns the state it left the row in, or raises :class:`~worker.retry.Later`.

    The permit comes first although a parked answer needs none: recoveries are rare, and one
    order keeps one outcome for a Redis that is away ("limiter unavailable": hand the row back).
    The permit is booked first and its slot waited for last, just before the send: the checks,
    the budget unit and the signature are done meanwhile (:class:`worker.permits.Booking`).
    ``retries``: the message's retry count (a backend outage's wait grows with it).
    ``parked``: the row's parked answer (or None) as :func:`parked_answers` found it with the
    message's others; not given, it is looked up here, after the permit. With
    ``billed``, an answer parked in Redis is left there for the message's one transaction
    (:meth:`Billed.store`) and ``"billed"`` returned; an answer Redis did not take is stored
    at once, so a crash can still only re-bill the calls on the wire.
    """
    slot = slot_of(item)
    try:
        booking = rt.limiter.book()  # the permit is ours now; its slot may be a second away
    except LimiterUnavailable as exc:
        return _release_for_later(rt, item, owner, "limiter", exc, retries)
    if parked is LOOK_UP:
        try:
            parked = take_parked_answer(rt, slot)
        except redis.RedisError as exc:
            return _release_for_later(rt, item, owner, "redis", exc, retries)
    if isinstance(parked, ModerationResponse):
        outcome = store_answer(rt, item, owner, parked, parked=True)
        log_outcome(item, 200, parked.request_id, f"{outcome} (answer recovered, not billed again)")
        return outcome
    if not rt.leases.still_held(item.id):
        log.info("item %s was taken over while waiting for a permit: not calling", item.id)
        return "skipped"
    if time.monotonic() - rt.leases.confirmed_at(item.id) > rt.settings.lease_seconds / 2:
        # A long wait for the permit (a limiter outage, a deep rate cut) with the heartbeat
        # perhaps failing too: make sure the row is still ours, or pay for nothing.
        try:
            ours = store.extend_lease(rt.engine, item.id, owner, rt.settings.lease_seconds)
        except SQLAlchemyError:
            raise Later(rt.settings.lease_seconds) from None
        if not ours:
            log.info("item %s was taken over while waiting for a permit: not calling", item.id)
            return "skipped"
    try:  # a local file: checked and uploaded now (worker.uploads), then sent as OSS triple
        ref = rt.uploads.prepare(item.ref) if item.ref.local_path and rt.uploads else item.ref
    except LocalFileProblem as problem:
        return _fail_now(rt, item, owner, problem.code, problem.message)
    except ModerationError as err:
        return _handle_error(rt, item, owner, err)
    held = _reserve(rt, item, owner, retries)  # a unit of the budgets, or the row paused
    if isinstance(held, str):
        return held
    # Everything before the slot (the checks above, the signature): after it, only the send,
    # so calls reach the service as evenly spaced as their permits (worker.permits.Booking).
    signed = rt.client.prepare(item.service, ref, item.info_type)
    grant = booking.wait()
    rt.metrics.observe_wait(grant.waited, grant.late)
    # A call leaving late may cost the call a second later a 403, whose answer can come back
    # before this one's: recorded before the send (a round trip, for late calls only).
    rt.limiter.note_late(grant)
    started = time.monotonic()
    try:
        with rt.metrics.in_flight():
            response = rt.client.moderate_signed(signed)
    except ModerationError as err:
        rt.metrics.observe_call(err.code, time.monotonic() - started)
        if rt.budget is not None and not isinstance(err, TransportError):
            rt.budget.give_back(item.job_key, held)  # answered, not billed (a fault may be)
        return _handle_error(rt, item, owner, err, grant.slot_us)
    # Billed: durable first (Redis), bookkeeping after.
    is_parked = park_answer(rt, slot, response)
    rt.metrics.observe_call(200, time.monotonic() - started)
    rt.metrics.billed()
    if rt.ledger is not None:
        rt.ledger.billed(item.job_id, item.service, held)
    rt.limiter.on_success()
    if billed is not None and is_parked:
        billed.answers.append((item, response))
        return "billed"
    outcome = store_answer(rt, item, owner, response, parked=is_parked)
    risk = response.data.risk_level if response.data else None
    log_outcome(item, 200, response.request_id, f"{outcome} risk={risk}")
    return outcome


def _reserve(
    rt: Runtime, item: store.ClaimedItem, owner: str, retries: int
) -> Reservation | str | None:
    """A unit of the daily and job budgets before the call (:mod:`worker.budget`); when one is
    used up the row is paused with the reason and ``"paused"`` is the outcome; None: no budget."""
    if rt.budget is None or not rt.budget.applies(item.max_calls):
        return None
    try:
        got = rt.budget.reserve(item.job_id, item.job_key, item.max_calls)
    except BudgetUnavailable as exc:
        return _release_for_later(rt, item, owner, "budget", exc, retries)
    if not isinstance(got, Exhausted):
        return got
    reason = got.reason
    with_db_retries(
        "pause_item",
        lambda: pause_item(rt.engine, item.id, owner, reason),
        time.monotonic() + 3600,
    )
    log_outcome(item, "budget", None, reason)
    return "paused"


def _handle_error(
    rt: Runtime,
    item: store.ClaimedItem,
    owner: str,
    err: ModerationError,
    slot_us: int = 0,
) -> str:
    """``slot_us``: the permit's slot when the call was made (a 403's limiter needs it)."""
    code = str(err.code) if err.code is not None else "transport"
    if isinstance(err, Throttled):
        try:
            rt.limiter.on_throttled(slot_us)
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
        log_outcome(item, code, err.request_id, f"retry in {decision.delay:.1f}s")
        rt.metrics.retry(code)
        raise Later(decision.delay)
    with_db_retries(
        "record_failure",
        lambda: store.record_failure(rt.engine, item.id, owner, code, err.message, str(err)),
        deadline,
    )
    log_outcome(item, code, err.request_id, f"failed: {err.message}")
    return "failed"


def _fail_now(rt: Runtime, item: store.ClaimedItem, owner: str, code: str, message: str) -> str:
    """Fail the row for good, without a call (a local file gone or changed since enqueue)."""
    with_db_retries(
        "record_failure",
        lambda: store.record_failure(rt.engine, item.id, owner, code, message, message),
        time.monotonic() + 3600,
    )
    log_outcome(item, code, None, f"failed: {message}")
    return "failed"


def _release_for_later(
    rt: Runtime, item: store.ClaimedItem, owner: str, what: str, exc: Exception, retries: int
) -> str:
    """Redis (the limiter, the parked answers) is away: hand the row back and retry later.

    No call is made without a permit, so nothing was billed; the message must not fail (it
    would be acknowledged and the row left ``running`` until its lease ran out).
    """
    delay = backend_wait(retries)
    with_db_retries(
        "record_retry",
        lambda: store.record_retry(
            rt.engine, item.id, owner, what, f"{what} unavailable", type(exc).__name__
        ),
        time.monotonic() + 3600,
    )
    log_outcome(item, what, None, f"{what} unavailable ({type(exc).__name__}); retry later")
    raise Later(delay)
