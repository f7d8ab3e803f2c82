"""Waiters: rows whose image is being billed right now for another row, settled afterwards.

:func:`worker.store.reuse.link_waiters` inserts a row whose identity or content key matches an
earlier row that is still open (same service and ``infoType``, any job) as a *waiter*: ``pending``
with ``waits_for`` naming that row (its *original*). The publishing window never takes a waiter
(:func:`worker.store.items.take_pending`), so no message, claim or call exists for it.
:func:`settle_waiters`, run every second by every worker's refill loop and by ``imgmod run``/
``wait`` (:class:`worker.window.RefillLoop`), then looks at the waiters whose original closed:

* original ``done`` with a Code-200 answer: the waiter takes a copy of it
  (:func:`worker.store.reuse.copy_answers`, the copy reuse across jobs makes: same RequestId and
  ``moderated_at``), ``reused_from`` names the billed item, and it is ``done`` without a call;
* original closed without one (``failed``, ``rejected``, e.g. its file vanished or the vendor
  refused it): the earliest of its waiters is released (``waits_for`` cleared; the window takes
  it and it is called itself) and the others now wait for that one.

Why this cannot bill twice: a waiter is called only after its original closed without a billed
answer (a failed call is not billed), and then only one released row per image is called while
the others wait again. A waiter never gets a message before it is released: it is inserted with
``waits_for`` set in the same transaction as the row, and the take skips it.

If the original's worker dies, nothing here changes: the lease and orphan machinery
(:mod:`worker.heartbeat`, :mod:`worker.window`) run the original again, and its waiters keep
waiting for it. ``imgmod retry`` of a failed original before the settle saw it makes it open
again, and the waiters keep waiting for that retry (the statements re-check the original's
state). Waiting never forms a cycle: a waiter always waits for a smaller id.

Cost: one read on the ``waits_for`` index per call when no waiter is ready, outside any write
transaction; a handful of statements per batch when some are; never a statement per row.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.store.engine import write
from worker.store.reuse import BILLED_CODE, copy_answers
from worker.store.schema import OPEN_STATES, items, results
from worker.store.sql import chunks, now

SETTLE_BATCH = 5000  # waiters looked at per read; more are left for the next call


@dataclass(frozen=True)
class Settled:
    """What one :func:`settle_waiters` did: waiters answered by a copy, waiters released (to be
    called themselves), and waiters moved to wait for a released one."""

    copied: int = 0
    released: int = 0
    moved: int = 0


@functools.lru_cache(maxsize=8)
def _look(batch: int) -> sa.Select[int, int, str, bool]:
    """The waiters whose original closed, at most ``batch``: built once per batch size.

    Why once: every worker process calls :func:`settle_waiters` each second, and building this
    statement (an alias of the table, its column collection, an EXISTS) cost ~2 ms of CPU a
    call on a 2-core box, more than running it; a statement built once also keeps its cache
    key, which SQLAlchemy would otherwise compute again for each new copy (``bench/idle.py``).
    """
    original = items.alias("original")
    answered = (
        sa.exists()
        .where(
            results.c.item_id == original.c.id,
            results.c.service == items.c.service,
            results.c.code == BILLED_CODE,
        )
        .label("answered")
    )
    return (
        sa.select(items.c.id, items.c.waits_for, items.c.service, answered)
        .select_from(items.join(original, original.c.id == items.c.waits_for))
        .where(
            items.c.waits_for.is_not(None),
            # Not ``state == 'pending'``: SQLite would then walk the (state, ...) index over
            # every pending row, 0.35 s a call at 750,000 of them, each second, in each worker,
            # under the write lock; through coalesce only the waits_for index can serve.
            sa.func.coalesce(items.c.state, "") == "pending",
            original.c.state.not_in(OPEN_STATES),
        )
        .order_by(items.c.waits_for, items.c.id)
        .limit(batch)
    )


def settle_waiters(engine: Engine, batch: int = SETTLE_BATCH) -> Settled:
    """Settle the waiters whose original has closed (see the module's docstring), at most
    ``batch`` of them, in one write transaction. Cheap to call every second."""
    look = _look(batch)
    with engine.connect() as conn:  # nothing to settle (the rule): no write lock taken
        if conn.execute(_look(1)).first() is None:
            return Settled()
    with write(engine) as conn:
        rows = conn.execute(look).all()
        if not rows:
            return Settled()
        ready: dict[str, list[int]] = defaultdict(list)
        heads: dict[int, int] = {}  # a failed original -> its earliest waiter, now released
        for waiter, waits_for, service, has_answer in rows:
            if has_answer:
                ready[str(service)].append(int(waiter))
            else:
                heads.setdefault(int(waits_for), int(waiter))
        copied = sum(_copy(conn, ids, service) for service, ids in ready.items())
        released, moved = _release(conn, heads)
    return Settled(copied, released, moved)


def _still_closed() -> sa.ColumnElement[bool]:
    """The updated row's original is (still) closed: a retried original is open again."""
    original = items.alias("still")
    return (
        sa.exists()
        .where(original.c.id == items.c.waits_for, original.c.state.not_in(OPEN_STATES))
        .correlate(items)
    )


def _copy(conn: Connection, ids: list[int], service: str) -> int:
    """Link the waiters ``ids`` (all of ``service``) to the billed item behind their original,
    then copy its answer and mark them done."""
    original = items.alias("original")
    billed = (
        sa.select(sa.func.coalesce(original.c.reused_from, original.c.id))
        .where(original.c.id == items.c.waits_for)
        .correlate(items)
        .scalar_subquery()
    )
    copied = 0
    for chunk in chunks(ids):
        linked = conn.execute(
            sa.update(items)
            .where(
                items.c.id.in_(chunk),
                items.c.state == "pending",
                items.c.waits_for.is_not(None),
                _still_closed(),
            )
            .values(reused_from=billed, waits_for=None, updated_at=now())
            .returning(items.c.id)
        ).scalars()
        mine = [int(i) for i in linked]  # only the rows this call linked: no copy twice
        if mine:
            copied += copy_answers(conn, mine, service)
    return copied


def _release(conn: Connection, heads: dict[int, int]) -> tuple[int, int]:
    """For each failed original, move its other waiters to wait for its earliest one, then
    release that one: exactly one row per image is called next."""
    if not heads:
        return 0, 0
    moment = now()
    pairs = [{"orig": orig, "head": head} for orig, head in heads.items()]
    moved = conn.execute(
        sa.update(items)
        .where(
            items.c.waits_for == sa.bindparam("orig"),
            items.c.state == "pending",
            items.c.id != sa.bindparam("head"),
            _still_closed(),
        )
        .values(waits_for=sa.bindparam("head"), updated_at=moment),
        pairs,
    ).rowcount
    released = 0
    for chunk in chunks(list(heads.values())):
        released += conn.execute(
            sa.update(items)
            .where(
                items.c.id.in_(chunk),
                items.c.state == "pending",
                items.c.waits_for.is_not(None),
                _still_closed(),
            )
            .values(waits_for=None, updated_at=moment)
        ).rowcount
    return released, max(0, int(moved))
