"""The Celery task: the only place where the queue, the client and the store meet.

A message carries a few item ids (``IMGMOD_IDS_PER_MESSAGE``). The task claims their rows in
one atomic statement before it spends a call, so a redelivered message for done rows, or for
rows leased by a live worker, costs nothing. While the task works on a row, the process's
:class:`~worker.heartbeat.LeaseKeeper` renews its lease; a killed worker's rows are swept back
to the queue about one lease later.

A billed answer is parked in Redis the moment it arrives, before the SQL write
(:mod:`worker.durable`): a worker killed at any point can only re-bill the calls it had on the
wire, and a database outage re-bills nothing. What to do after a failed call is decided by
:func:`worker.retry.decide_error`; this module only carries the decision out. The process's
shared resources are the :class:`~worker.runtime.Runtime` (:func:`worker.app.process_settings`).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import redis
from celery import Task
from celery.signals import celeryd_after_setup, task_received, worker_ready, worker_shutdown
from sqlalchemy.exc import SQLAlchemyError

from worker import store
from worker.app import process_app, process_settings
from worker.attempt import LOOK_UP, Billed, attempt, parked_answers
from worker.retry import Later, backend_wait, countdown, look_again_after
from worker.runtime import (
    READY_DATABASE_CONNECTIONS,
    Runtime,
    current_runtime,
    new_owner,
    process_runtime,
)
from worker.store import ClaimedItem

log = logging.getLogger("imgmod.task")

app = process_app()


def runtime() -> Runtime:
    """This worker process's runtime, built on first use from its app's settings."""
    return process_runtime(process_settings(), publish_again)


@app.task(bind=True, name="imgmod.moderate", acks_late=True, max_retries=None)  # type: ignore[untyped-decorator]
def moderate(self: Task, *item_ids: int) -> str:
    """Moderate a message's items (``IMGMOD_IDS_PER_MESSAGE`` of them); returns the states it
    left the rows in, comma-separated (for logs and tests).

    The ids are claimed in one statement (:func:`worker.store.claim_items`) and each one then
    takes its own permit, budget unit and call, side by side in the process's call threads
    (``Runtime.calls``, as many as the worker's), so as many calls are on the wire as with one
    id per message and the rate limit sets the pace. Their answers are stored in one
    transaction, and the message is acknowledged after. An id to be tried again goes back in
    a message of its own (with the message's retry count plus one): the ids done stay done,
    and a 403's backoff is that id's alone. A message of one id retries itself, as it always
    did. An outage of the database at the claim retries the whole message.
    """
    rt = runtime()
    ids = [int(i) for i in item_ids]
    try:
        return _moderate_message(self, rt, ids)
    finally:
        _in_hand(rt, ids, False)  # recorded in hand when received: _message_received


def _in_hand(rt: Runtime, ids: Sequence[int], holding: bool) -> None:
    """Tell Redis this process holds (or let go of) the items' message: if it dies before
    claiming the rows, a live worker publishes them again (worker.heartbeat.MessagesInHand)."""
    hands = rt.leases.hands
    if hands is None:
        return
    try:
        if holding:
            hands.took(*ids)
        else:
            hands.done(*ids)
    except redis.RedisError as exc:  # advisory: the lease sweep and stall detection remain
        log.debug("could not record items %s in hand: %s", ids, exc)


def _moderate_message(self: Task, rt: Runtime, ids: list[int]) -> str:
    owner = new_owner()
    try:
        claimed = store.claim_items(rt.engine, ids, owner, rt.settings.lease_seconds)
    except SQLAlchemyError as exc:
        delay = backend_wait(self.request.retries)
        log.warning(
            "database unavailable claiming items %s (%s); retry in %.1fs",
            ",".join(map(str, ids)),
            type(exc).__name__,
            delay,
        )
        raise _retry_later(self, rt, delay) from None
    outcomes: dict[int, str] = {}
    later: dict[int, float] = {}
    failures: list[BaseException] = []
    rt.leases.hold((item.id for item in claimed), owner)
    by_id = {item.id: item for item in claimed}
    billed = Billed() if len(ids) > 1 else None  # stored together, their rows still held
    retries = self.request.retries
    side_by_side: dict[int, Future[str]] = {}
    if billed is not None and rt.calls is not None:
        parked = parked_answers(rt, claimed)  # one MGET for the message, not a GET per row
        for one in claimed:
            side_by_side[one.id] = rt.calls.submit(
                _attempt, rt, one, owner, retries, billed, parked.get(one.id, LOOK_UP)
            )
    try:
        for item_id in dict.fromkeys(ids):
            item = by_id.get(item_id)
            try:
                if item is None:
                    outcomes[item_id] = _not_claimed(rt, item_id)
                elif item_id in side_by_side:
                    outcomes[item_id] = side_by_side[item_id].result()
                else:
                    outcomes[item_id] = attempt(rt, item, owner, retries, billed)
            except Later as again:
                later[item_id] = again.delay
                outcomes[item_id] = "retry"
            except Exception as exc:  # one id's surprise must not cost the others their attempt
                if len(ids) == 1:
                    raise
                log.exception("item %s: unexpected error; its lease will run out", item_id)
                failures.append(exc)
                outcomes[item_id] = "error"
            finally:
                if item is not None and outcomes.get(item_id) != "billed":
                    rt.leases.let_go(item_id, owner)
        if billed is not None:
            outcomes.update(billed.store(rt, owner))
    finally:
        for item, _ in billed.answers if billed is not None else ():
            rt.leases.let_go(item.id, owner)
    if later and len(ids) == 1:
        raise _retry_later(self, rt, later[ids[0]])
    for item_id, delay in later.items():
        _retry_alone(self, rt, item_id, delay)
    if failures:
        raise failures[0]
    return ",".join(outcomes[i] for i in dict.fromkeys(ids))


def _attempt(
    rt: Runtime, item: ClaimedItem, owner: str, retries: int, billed: Billed, parked: object
) -> str:
    """:func:`~worker.attempt.attempt` in a call thread, letting go of the row as soon as it
    is over (unless its answer waits for the message's transaction): the heartbeat must not
    renew, nor report lost, a row already handed back or closed."""
    outcome = "error"
    try:
        outcome = attempt(rt, item, owner, retries, billed, parked)
        return outcome
    finally:
        if outcome != "billed":
            rt.leases.let_go(item.id, owner)


def _not_claimed(rt: Runtime, item_id: int) -> str:
    """An id the claim did not get: done (skip) or leased elsewhere (look again later)."""
    try:
        left = store.lease_left(rt.engine, item_id)
    except SQLAlchemyError:
        left = rt.settings.lease_seconds  # cannot tell: look again later rather than drop
    if left is None:
        log.debug("item %s is done, failed or rejected: nothing to do", item_id)
        return "skipped"
    # Leased elsewhere: look again once the lease is over, never drop (look_again_after).
    log.info("item %s is leased by another worker for %.1fs more; looking again", item_id, left)
    raise Later(look_again_after(left))


def _retry_later(self: Task, rt: Runtime, delay: float) -> Exception:
    """``self.retry`` after about ``delay`` s, never longer than half the visibility timeout
    (:func:`worker.retry.countdown` says why).

    A retry whose publish fails (broker gone) rejects this message: the row is left ``queued``
    (or as it was), and a live worker's orphan finder (or ``imgmod resume``) republishes it.
    """
    result: Exception = self.retry(countdown=countdown(delay, rt.settings.visibility_timeout))
    return result


def _retry_alone(self: Task, rt: Runtime, item_id: int, delay: float) -> None:
    """Send one id of a message back alone, after about ``delay`` s (as :func:`_retry_later`).

    Its row was handed back (``queued``) or is leased elsewhere; if the publish fails (broker
    gone) the row waits ``queued`` without a message, and a live worker's orphan finder (or
    ``imgmod resume``) publishes it again: the message's other ids are not held up for it.
    """
    try:
        moderate.apply_async(
            (item_id,),
            countdown=countdown(delay, rt.settings.visibility_timeout),
            retries=self.request.retries + 1,
        )
    except Exception as exc:  # noqa: BLE001 - the row is found again (see above)
        log.warning("item %s: could not publish its retry (%s)", item_id, type(exc).__name__)


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


@worker_ready.connect(dispatch_uid="imgmod.db.open")  # type: ignore[untyped-decorator]
def _open_database_connections(**_: object) -> None:
    """A fresh worker's first claims find their database connections open
    (:func:`worker.store.open_connections` says why); connected after the lease keeper's
    start, so the runtime is built, and before the freeze, so the connections are frozen too."""
    rt = current_runtime()
    if rt is not None:
        opened = store.open_connections(rt.engine, READY_DATABASE_CONNECTIONS)
        log.info("database: %d connections opened at start", opened)


@worker_ready.connect(dispatch_uid="imgmod.gc.freeze")  # type: ignore[untyped-decorator]
def _freeze_what_start_up_made(**_: object) -> None:
    """Move every object the start-up made (modules, Celery, kombu, SQLAlchemy, the runtime:
    about 130,000) out of the collector's reach, after one last collection.

    Why: a full collection walks them all, holding the GIL: 104-150 ms on a 2-core box
    whose probe reads about 160 ms, every 7-10 s in each worker process. Every call whose
    permit came due meanwhile then left in a bunch, a second the service counts held up to
    thirteen calls too many, and the 403s of that volley halved the shared rate (the
    limiter's "a dense volley is a lower cap"). Frozen, a full collection walks what was made
    since: 7-17 ms. Connected after the lease keeper's start, so the runtime is built."""
    gc.collect()
    gc.freeze()


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
        ids = [int(i) for i in request.args]
    except (TypeError, ValueError):
        return
    _in_hand(rt, ids, True)
