"""Reading the review queue in order, fast however much of it was already reviewed.

The queue is every current ``review`` decision (an item's latest ``decisions`` row), highest
priority first, then oldest; ``ix_decisions_queue`` (decision, priority DESC, id) and its
per-job twin hold it in that order. Decisions are append-only, so a reviewed image's ``review``
row stays in the index, superseded; after a day of reviewing, the head of the index is
thousands of superseded rows, and stepping past them on every page would cost a probe each.

A :class:`QueueMark` remembers where the live part of the index starts: the first row still
current when the mark was set, and the highest decision id then (``seen_id``). A superseded
row never becomes current again (a newer decision only ever adds a row), so every current
``review`` row is either at or after the mark, or newer than ``seen_id`` (a policy run or an
undo since). A read takes both parts: the index from the mark on (two index ranges: the mark's
priority from its id, then the lower priorities) and the decisions newer than ``seen_id`` (a
short range of the primary key). Marks only move forward and any mark is correct, just slower
when old, so the caller keeps one per queue (:class:`QueueMarks`) without locking the database.

Review decisions without a priority are not queued: policies always give one (0 by default).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from worker.store.schema import decisions, review_leases
from worker.store.sql import db_now

FIELDS = (decisions.c.id, decisions.c.item_id, decisions.c.job_id, decisions.c.priority,
          decisions.c.rule)  # fmt: skip
# A mark is moved at most this often per queue: between moves a read also steps past the rows
# decided since (a second of a busy team's decisions), which costs less than moving it.
REFRESH_SECONDS = 1.0


@dataclass(frozen=True)
class QueueMark:
    """Every current review row is at/after (priority, decision_id) in queue order, or has an
    id above ``seen_id``. ``priority`` None: nothing current was found when the mark was set."""

    priority: int | None = None
    decision_id: int = 0
    seen_id: int = -1  # -1: no mark yet (read the whole index)


class QueueMarks:
    """One mark per queue (a job's, or every job's: key None), shared by a process's threads."""

    def __init__(self, refresh_seconds: float = REFRESH_SECONDS) -> None:
        self._marks: dict[int | None, tuple[float, QueueMark]] = {}
        self._lock = threading.Lock()
        self.refresh_seconds = refresh_seconds

    def get(self, job_id: int | None) -> QueueMark:
        with self._lock:
            return self._marks.get(job_id, (0.0, QueueMark()))[1]

    def fresh(self, job_id: int | None) -> QueueMark | None:
        """The mark when it was moved less than ``refresh_seconds`` ago, else None."""
        with self._lock:
            moved, mark = self._marks.get(job_id, (0.0, QueueMark()))
        return mark if time.monotonic() - moved < self.refresh_seconds else None

    def put(self, job_id: int | None, mark: QueueMark) -> None:
        with self._lock:
            old = self._marks.get(job_id)
            if old is None or mark.seen_id >= old[1].seen_id:
                self._marks[job_id] = (time.monotonic(), mark)


def _superseded() -> sa.Exists:
    newer = decisions.alias("newer")
    return sa.exists().where(newer.c.item_id == decisions.c.item_id, newer.c.id > decisions.c.id)


def _base(job_id: int | None) -> sa.Select[Any]:
    query = sa.select(*FIELDS).where(
        decisions.c.decision == "review", decisions.c.priority.is_not(None), ~_superseded()
    )
    return query if job_id is None else query.where(decisions.c.job_id == job_id)


def _free(dialect: str, reviewer: str, exclude: Sequence[int]) -> list[sa.ColumnElement[bool]]:
    held = sa.exists().where(
        review_leases.c.item_id == decisions.c.item_id,
        review_leases.c.reviewer != reviewer,
        review_leases.c.expires_at > db_now(dialect),
    )
    conditions: list[sa.ColumnElement[bool]] = [~held]
    if exclude:
        conditions.append(decisions.c.item_id.not_in(list(exclude)))
    return conditions


def _from_mark(
    conn: Connection, job_id: int | None, mark: QueueMark, extra: Sequence[Any], limit: int
) -> list[Any]:
    """Up to ``limit`` rows at/after the mark and rows newer than ``seen_id``, in queue order."""
    order = (decisions.c.priority.desc(), decisions.c.id)
    if mark.seen_id < 0:
        return list(conn.execute(_base(job_id).where(*extra).order_by(*order).limit(limit)))
    found: list[Any] = []
    if mark.priority is not None:
        found += conn.execute(
            _base(job_id)
            .where(
                *extra, decisions.c.priority == mark.priority, decisions.c.id >= mark.decision_id
            )  # fmt: skip
            .order_by(decisions.c.id)
            .limit(limit)
        ).all()
        if len(found) < limit:
            found += conn.execute(
                _base(job_id)
                .where(*extra, decisions.c.priority < mark.priority)
                .order_by(*order)
                .limit(limit - len(found))
            ).all()
    found += conn.execute(
        _base(job_id).where(*extra, decisions.c.id > mark.seen_id).order_by(*order).limit(limit)
    ).all()
    unique = {row.id: row for row in found}
    return sorted(unique.values(), key=lambda row: (-row.priority, row.id))[:limit]


def advance(conn: Connection, job_id: int | None, mark: QueueMark) -> QueueMark:
    """The mark moved to the first row now current (leased or not), with a fresh ``seen_id``
    read first (so a decision appended during the read is newer than it)."""
    seen = conn.execute(sa.select(sa.func.coalesce(sa.func.max(decisions.c.id), 0))).scalar_one()
    first = _from_mark(conn, job_id, mark, (), 1)
    if not first:
        return QueueMark(None, 0, int(seen))
    return QueueMark(int(first[0].priority), int(first[0].id), int(seen))


def candidates(
    conn: Connection,
    job_id: int | None,
    mark: QueueMark,
    reviewer: str,
    exclude: Sequence[int],
    limit: int,
) -> list[Any]:
    """Up to ``limit`` current review rows free for ``reviewer`` (not leased to anyone else,
    not in ``exclude``), in queue order."""
    return _from_mark(conn, job_id, mark, _free(conn.dialect.name, reviewer, exclude), limit)
