"""The review queue's reads and writes: who holds which image, what a reviewer decided, undo.

The queue is every item whose current decision (its latest ``decisions`` row) is ``review``,
highest priority first, then oldest decision first. A reviewer takes one at a time under a
**review lease** (``review_leases``, one row per item, the database's clock): the claim is one
``INSERT ... ON CONFLICT DO UPDATE ... WHERE <free or mine> RETURNING``, so of two reviewers
reaching for the same image exactly one gets it, the other moves on to the next.

A reviewer's decision is a new ``decisions`` row (source ``review``, actor the user) and its
event, written by :func:`worker.store.decisions.record_decisions`; an undo is another new row
(the decision before, restored) with an ``undo`` event, never an update. Every write checks its
premise first (the lease is the caller's, the item still awaits review, the undone decision
is still current) and refuses with :class:`ReviewRefused` otherwise, changing nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.store.decisions import Decision, NewDecision, record_decisions
from worker.store.engine import write
from worker.store.events import NewEvent, insert_events
from worker.store.review_queue import QueueMark, QueueMarks, advance, candidates
from worker.store.schema import decisions, items, review_leases
from worker.store.sql import clip, db_now, insert_for, now

CANDIDATES = 8  # queue rows read per claim attempt: enough to step past a few taken ones
REVIEW_DECISIONS = ("block", "pass")


class ReviewRefused(Exception):
    """A review write whose premise no longer holds; the message says why and what to do."""


@dataclass(frozen=True)
class Lease:
    """An item leased to a reviewer, with the decision that put it in the queue."""

    item_id: int
    job_id: int
    decision_id: int
    priority: int | None
    rule: str | None


def _newer_exists() -> sa.Exists:
    newer = decisions.alias("newer")
    return sa.exists().where(newer.c.item_id == decisions.c.item_id, newer.c.id > decisions.c.id)


def _lease(row: Any) -> Lease:
    return Lease(int(row.item_id), int(row.job_id), int(row.id), row.priority, row.rule)


def _claim(conn: Connection, reviewer: str, lease: Lease, seconds: float) -> bool:
    dialect = conn.dialect.name
    stmt = insert_for(conn, review_leases).values(
        item_id=lease.item_id,
        job_id=lease.job_id,
        reviewer=reviewer,
        expires_at=db_now(dialect, seconds),
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[review_leases.c.item_id],
        set_={"reviewer": stmt.excluded.reviewer, "expires_at": stmt.excluded.expires_at},
        where=sa.or_(
            review_leases.c.expires_at <= db_now(dialect),
            review_leases.c.reviewer == reviewer,
        ),
    ).returning(review_leases.c.item_id)
    return conn.execute(stmt).first() is not None


def held_lease(engine: Engine, reviewer: str, job_id: int | None = None) -> Lease | None:
    """The item this reviewer holds and that still awaits review (a reload shows it again)."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(
                decisions.c.id,
                decisions.c.item_id,
                decisions.c.job_id,
                decisions.c.priority,
                decisions.c.rule,
            )
            .join(review_leases, review_leases.c.item_id == decisions.c.item_id)
            .where(
                review_leases.c.reviewer == reviewer,
                review_leases.c.expires_at > db_now(conn.dialect.name),
                decisions.c.decision == "review",
                ~_newer_exists(),
                *([decisions.c.job_id == job_id] if job_id is not None else []),
            )
            .order_by(decisions.c.priority.desc(), decisions.c.id)
            .limit(1)
        ).first()
    return None if row is None else _lease(row)


def take_next(
    engine: Engine,
    reviewer: str,
    *,
    job_id: int | None = None,
    lease_seconds: float = 300.0,
    exclude: Sequence[int] = (),
    marks: QueueMarks | None = None,
) -> Lease | None:
    """The reviewer's current image, or the next free one leased to them; None when the queue
    (of ``job_id``, or of every job) holds nothing for them. ``exclude``: items they skipped;
    ``marks``: where each queue's live part starts (see :mod:`worker.store.review_queue`)."""
    return take_two(
        engine, reviewer, job_id=job_id, lease_seconds=lease_seconds, exclude=exclude, marks=marks
    )[0]


def take_two(
    engine: Engine,
    reviewer: str,
    *,
    job_id: int | None = None,
    lease_seconds: float = 300.0,
    exclude: Sequence[int] = (),
    marks: QueueMarks | None = None,
) -> tuple[Lease | None, Lease | None]:
    """:func:`take_next`, and the image after it (not leased; the page preloads its picture),
    from the same read of the queue."""
    mine = held_lease(engine, reviewer, job_id)
    mark = _marked(engine, job_id, marks)
    if mine is not None:  # a reload: no write, no lock
        with engine.connect() as conn:
            rows = candidates(conn, job_id, mark, reviewer, [*exclude, mine.item_id], 1)
        return mine, _lease(rows[0]) if rows else None
    while True:
        with write(engine) as conn:
            rows = candidates(conn, job_id, mark, reviewer, exclude, CANDIDATES)
            if not rows:
                return None, None
            for index, row in enumerate(rows):
                lease = _lease(row)
                if not _claim(conn, reviewer, lease, lease_seconds):
                    continue
                # Read after the claim: a reviewer who decided this image since the queue was
                # read committed that decision before releasing the lease we just took.
                if _current(conn, lease.item_id).id == lease.decision_id:
                    following = rows[index + 1] if index + 1 < len(rows) else None
                    return lease, _lease(following) if following is not None else None
                _drop(conn, lease.item_id, reviewer)
        # every candidate was taken between the read and the claim: read the queue again


def _marked(engine: Engine, job_id: int | None, marks: QueueMarks | None) -> QueueMark:
    if marks is None:
        return QueueMark()
    mark = marks.fresh(job_id)
    if mark is None:
        with engine.connect() as conn:
            mark = advance(conn, job_id, marks.get(job_id))
        marks.put(job_id, mark)
    return mark


def peek_next(
    engine: Engine,
    reviewer: str,
    *,
    job_id: int | None,
    exclude: Sequence[int],
    marks: QueueMarks | None = None,
) -> Lease | None:
    """The first free image of the queue for ``reviewer``, without leasing it."""
    mark = _marked(engine, job_id, marks)
    with engine.connect() as conn:
        rows = candidates(conn, job_id, mark, reviewer, exclude, 1)
    return _lease(rows[0]) if rows else None


def picture_row(engine: Engine, item_id: int) -> dict[str, Any] | None:
    """What the page needs to show an item's picture (one indexed read)."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(
                items.c.id, items.c.kind, items.c.image_url, items.c.oss_bucket,
                items.c.oss_object, items.c.oss_region, items.c.local_path,
            ).where(items.c.id == item_id)
        ).first()  # fmt: skip
    return None if row is None else dict(row._mapping)


def _drop(conn: Connection, item_id: int, reviewer: str) -> None:
    conn.execute(
        sa.delete(review_leases).where(
            review_leases.c.item_id == item_id, review_leases.c.reviewer == reviewer
        )
    )


def release(engine: Engine, item_id: int, reviewer: str) -> None:
    """Give the item back to the queue (only the reviewer's own lease)."""
    with write(engine) as conn:
        _drop(conn, item_id, reviewer)


def _current(conn: Connection, item_id: int) -> Any:
    return conn.execute(
        sa.select(decisions).where(decisions.c.item_id == item_id).order_by(decisions.c.id.desc())
    ).first()


def _check_lease(conn: Connection, item_id: int, reviewer: str) -> None:
    row = conn.execute(
        sa.select(
            review_leases.c.reviewer,
            (review_leases.c.expires_at > db_now(conn.dialect.name)).label("live"),
        ).where(review_leases.c.item_id == item_id)
    ).first()
    if row is None or row.reviewer != reviewer or not row.live:
        raise ReviewRefused(
            f"image {item_id} is not leased to you (its lease ran out or another reviewer "
            "holds it); nothing was recorded, open the queue for your next image"
        )


def decide(
    engine: Engine, item_id: int, reviewer: str, decision: str, reason: str | None
) -> Decision:
    """Record a reviewer's ``block`` or ``pass`` for an item they hold, and release it.

    Refused (nothing written) when the decision is not one a reviewer makes, the lease is not
    theirs, or the item no longer awaits review."""
    if decision not in REVIEW_DECISIONS:
        raise ReviewRefused(f"decision {decision!r} is not one a reviewer makes; use block or pass")
    with engine.connect() as conn:
        _check_lease(conn, item_id, reviewer)
        current = _current(conn, item_id)
    if current is None or current.decision != "review":
        raise ReviewRefused(f"image {item_id} no longer awaits review; nothing was recorded")
    stored = record_decisions(
        engine,
        [
            NewDecision(
                item_id=item_id,
                job_id=int(current.job_id),
                decision=decision,
                source="review",
                actor=reviewer,
                rule=current.rule,
                reason=reason or None,
            )
        ],
    )[0]
    release(engine, item_id, reviewer)
    return stored


def undo(engine: Engine, decision_id: int, reviewer: str, lease_seconds: float = 300.0) -> int:
    """Undo the reviewer's decision ``decision_id``: a new decision restoring the one before it
    (source ``review``, the reviewer as actor) and an ``undo`` event; the item is leased back to
    the reviewer so the queue shows it again. Returns the item id.

    Refused when the decision is not the reviewer's own review, or is no longer the item's
    current one (someone decided since: a stale undo)."""
    with write(engine) as conn:
        mine = conn.execute(sa.select(decisions).where(decisions.c.id == decision_id)).first()
        if mine is None or mine.source != "review" or mine.actor != reviewer:
            raise ReviewRefused(
                f"decision {decision_id} is not a review of yours; nothing was undone"
            )
        current = _current(conn, int(mine.item_id))
        if current.id != mine.id:
            raise ReviewRefused(
                f"image {mine.item_id} was decided again after your decision {decision_id} "
                f"({current.decision} by {current.actor}); nothing was undone"
            )
        before = conn.execute(
            sa.select(decisions)
            .where(decisions.c.item_id == mine.item_id, decisions.c.id < mine.id)
            .order_by(decisions.c.id.desc())
        ).first()
        if before is None:
            raise ReviewRefused(f"decision {decision_id} has nothing before it to restore")
        moment = now()
        restored = clip(
            decisions,
            {
                "item_id": mine.item_id,
                "job_id": mine.job_id,
                "decision": before.decision,
                # a review without a priority would fall out of the queue (review_queue)
                "priority": (before.priority or 0)
                if before.decision == "review"
                else before.priority,
                "rule": before.rule,
                "source": "review",  # a person restored it: no policy decided this row
                "actor": reviewer,
                "reason": f"undo of decision {decision_id}",
                "decided_at": moment,
            },
        )
        new_id = conn.execute(sa.insert(decisions).returning(decisions.c.id), restored).scalar_one()
        insert_events(
            conn,
            [
                NewEvent(
                    kind="undo",
                    actor=reviewer,
                    what=str(before.decision),
                    job_id=int(mine.job_id),
                    item_id=int(mine.item_id),
                    why=f"undo of decision {decision_id}",
                    before={"decision": mine.decision, "decision_id": int(mine.id)},
                    after={"decision": before.decision, "decision_id": int(new_id)},
                    at=moment,
                )
            ],
        )
        if before.decision == "review":
            # the undone image is the reviewer's next: the one they had moved on to goes back
            conn.execute(sa.delete(review_leases).where(review_leases.c.reviewer == reviewer))
            lease = Lease(int(mine.item_id), int(mine.job_id), int(new_id), before.priority, None)
            _claim(conn, reviewer, lease, lease_seconds)
    return int(mine.item_id)
