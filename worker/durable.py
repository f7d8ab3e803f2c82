"""A billed answer, kept: parked in Redis the moment it arrives, then written to SQL.

A billed answer is parked in Redis (:class:`~worker.store.answers.ParkedAnswers`) before the SQL
write, and cleared after it; any later claim of the row stores a parked answer instead of
calling again. So a worker killed at any point can only re-bill the calls it had on the wire,
and a database outage re-bills nothing. An answer the database refuses (not an outage) fails
the row with the reason; it is never retried forever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import redis
from sqlalchemy.exc import SQLAlchemyError

from worker import store
from worker.results import ModerationResponse, parse_response
from worker.retry import backoff_delay
from worker.runtime import Runtime
from worker.store.answers import AnswerSlot

log = logging.getLogger("imgmod.task")

T = TypeVar("T")


def slot_of(item: store.ClaimedItem) -> AnswerSlot:
    """Where this row's billed answer is parked: its database's job, the item, the service and
    the reference, so no other database's (or job's) answer can ever be taken for it."""
    ref = item.ref
    return AnswerSlot(
        job_key=item.job_key,
        job_id=item.job_id,
        item_id=item.id,
        service=item.service,
        reference=(
            ref.image_url,
            ref.oss_bucket,
            ref.oss_object,
            ref.oss_region,
            ref.data_id,
            ref.referer,
        ),
    )


def with_db_retries(what: str, fn: Callable[[], T], deadline: float) -> T:
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


def take_parked_answers(
    rt: Runtime, slots: Sequence[AnswerSlot]
) -> list[ModerationResponse | None]:
    """:func:`take_parked_answer` for a message's rows, in one round trip; the same error."""
    if rt.answers is None:
        return [None] * len(slots)
    raws = rt.answers.find_many(slots)
    return [None if raw is None else parse_response(raw, http_status=200) for raw in raws]


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
    slot = slot_of(item)

    def write() -> bool:
        return store.record_result(
            rt.engine, item.id, owner, item.service, response, job_id=item.job_id
        )

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
            with_db_retries("record_result", write, deadline=float("inf"))
    except Exception as exc:  # noqa: BLE001 - refused for good: say so on the row, don't loop
        reason = _refusal(exc)
        with_db_retries(
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


def store_answers(
    rt: Runtime, owner: str, billed: Sequence[tuple[store.ClaimedItem, ModerationResponse]]
) -> list[str]:
    """Write a message's billed answers, each already parked in Redis, in one transaction;
    their outcomes, in order.

    An outage is waited out as by :func:`store_answer` (the answers stay parked meanwhile). A
    refusal of the transaction stores them one by one with :func:`store_answer`, so only the
    answer the database refuses fails its row. The parked copies are cleared in one command.
    """
    if not billed:
        return []
    answers = [store.BilledAnswer(i.id, i.job_id, i.service, r) for i, r in billed]
    try:
        with_db_retries(
            "record_results", lambda: store.record_results(rt.engine, answers), float("inf")
        )
    except Exception:  # noqa: BLE001 - refused: find out which one, one by one
        return [store_answer(rt, item, owner, response, parked=True) for item, response in billed]
    if rt.answers is not None:
        try:
            rt.answers.clear(*(slot_of(item) for item, _ in billed))
        except redis.RedisError:  # stored; the parked copies expire
            log.warning("could not clear the parked answers of %d items", len(billed))
    return ["done"] * len(billed)
