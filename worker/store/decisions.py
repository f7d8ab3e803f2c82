"""Decisions: what a policy (``imgmod decide``) or a person (the review page) decided about an
item. Append-only, like the events log: the latest row per item (highest id) is its current
decision, and every earlier one stays, so a new policy version never loses the old decisions.

Every decision is also an event, written in the same transaction by :func:`record_decisions`
(kind ``decision`` for a policy's, ``review`` for a person's), with the item's previous decision
as ``before``. Reads: :func:`latest_decisions` pages a job's current decisions (optionally only
one kind), :func:`current_decisions` looks up given items, :func:`decision_counts` counts a
job's current decisions, :func:`item_decisions` lists one item's, oldest first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.store.engine import write
from worker.store.schema import DECISIONS, decisions, events
from worker.store.sql import chunks, now

SOURCES = ("policy", "review")


@dataclass(frozen=True)
class NewDecision:
    """A decision to record. ``source`` is ``policy`` (with the policy's name, version and
    content hash) or ``review`` (a person; ``actor`` is their name). ``priority``: review order,
    higher first; None when the decision needs no review."""

    item_id: int
    job_id: int
    decision: str
    source: str
    actor: str
    rule: str | None = None
    priority: int | None = None
    policy_name: str | None = None
    policy_version: str | None = None
    policy_hash: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Decision:
    """One stored decision."""

    id: int
    item_id: int
    job_id: int
    decision: str
    priority: int | None
    rule: str | None
    policy_name: str | None
    policy_version: str | None
    policy_hash: str | None
    source: str
    actor: str
    reason: str | None
    decided_at: datetime

    def summary(self) -> dict[str, Any]:
        """The small JSON object an event keeps as ``before``/``after``."""
        return {
            "decision": self.decision,
            "rule": self.rule,
            "priority": self.priority,
            "policy": self.policy_name,
            "policy_version": self.policy_version,
            "source": self.source,
            "decision_id": self.id,
        }


def _decision(row: Any) -> Decision:
    return Decision(
        id=int(row.id),
        item_id=int(row.item_id),
        job_id=int(row.job_id),
        decision=row.decision,
        priority=row.priority,
        rule=row.rule,
        policy_name=row.policy_name,
        policy_version=row.policy_version,
        policy_hash=row.policy_hash,
        source=row.source,
        actor=row.actor,
        reason=row.reason,
        decided_at=row.decided_at,
    )


def _latest_id() -> sa.ScalarSelect[Any]:
    """The id of the outer ``decisions`` row's item's latest decision (correlated)."""
    newer = decisions.alias("newer")
    return (
        sa.select(sa.func.max(newer.c.id))
        .where(newer.c.item_id == decisions.c.item_id)
        .scalar_subquery()
    )


def _current(conn: Connection, item_ids: Sequence[int]) -> dict[int, Decision]:
    found: dict[int, Decision] = {}
    for batch in chunks(list(item_ids)):
        newest = (
            sa.select(sa.func.max(decisions.c.id))
            .where(decisions.c.item_id.in_(batch))
            .group_by(decisions.c.item_id)
        )
        for row in conn.execute(sa.select(decisions).where(decisions.c.id.in_(newest))):
            found[int(row.item_id)] = _decision(row)
    return found


def current_decisions(engine: Engine, item_ids: Iterable[int]) -> dict[int, Decision]:
    """The current (latest) decision of each of ``item_ids`` that has one, by item id."""
    with engine.connect() as conn:
        return _current(conn, list(item_ids))


def _check(new: NewDecision) -> None:
    if new.decision not in DECISIONS:
        raise ValueError(f"unknown decision {new.decision!r}; use one of {', '.join(DECISIONS)}")
    if new.source not in SOURCES:
        raise ValueError(f"unknown decision source {new.source!r}; use policy or review")


# Column lengths, applied by hand: clip() per row costs more than the insert on a 100,000-row run.
_LENGTHS: dict[str, int] = {
    column.name: length
    for column in decisions.columns
    if (length := getattr(column.type, "length", None)) is not None
}
_EVENT_COLUMNS = (
    "at",
    "kind",
    "actor",
    "job_id",
    "item_id",
    "what",
    "why",
    "policy_name",
    "policy_version",
    "before",
    "after",
)


def _cut(name: str, value: str | None) -> str | None:
    length = _LENGTHS[name]
    return value[:length] if value is not None and len(value) > length else value


def _summary_sql(dialect: str, row: sa.FromClause) -> sa.ColumnElement[Any]:
    """:meth:`Decision.summary` built by the database, as a JSON object."""
    build = sa.func.jsonb_build_object if dialect == "postgresql" else sa.func.json_object
    pairs: list[Any] = []
    for key, column in (
        ("decision", "decision"),
        ("rule", "rule"),
        ("priority", "priority"),
        ("policy", "policy_name"),
        ("policy_version", "policy_version"),
        ("source", "source"),
        ("decision_id", "id"),
    ):
        pairs += [sa.literal_column(f"'{key}'"), row.c[column]]
    return build(*pairs)


def _log(conn: Connection, ids: Sequence[int]) -> None:
    """One event per decision of ``ids``, built by the database from the decisions themselves
    (``INSERT ... SELECT``): ``before`` is the item's previous decision, ``after`` this one.

    Set-based because a policy run logs every row it decides: 100,000 events made and sent
    one by one from Python take longer than the whole rest of the run.
    """
    dialect = conn.dialect.name
    new, older, before = decisions.alias("new"), decisions.alias("older"), decisions.alias("prev")
    previous = (
        sa.select(sa.func.max(older.c.id))
        .where(older.c.item_id == new.c.item_id, older.c.id < new.c.id)
        .correlate(new)
        .scalar_subquery()
    )
    for batch in chunks(list(ids)):
        query = (
            sa.select(
                new.c.decided_at,
                sa.case((new.c.source == "policy", "decision"), else_="review"),
                new.c.actor,
                new.c.job_id,
                new.c.item_id,
                new.c.decision,
                new.c.reason,
                new.c.policy_name,
                new.c.policy_version,
                sa.case((before.c.id.is_(None), sa.null()), else_=_summary_sql(dialect, before)),
                _summary_sql(dialect, new),
            )
            .select_from(new.outerjoin(before, before.c.id == previous))
            # the range first: the primary key's index, whatever the planner knows
            .where(new.c.id.between(min(batch), max(batch)), new.c.id.in_(batch))
            .order_by(new.c.id)
        )
        conn.execute(sa.insert(events).from_select(list(_EVENT_COLUMNS), query))


def _insert(conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
    """Insert ``rows`` in multi-row batches; their ids, in the order given.

    SQLAlchemy only batches an INSERT ... RETURNING on SQLite when the order of the returned
    rows does not matter (asking for it falls back to one statement per row: 30x slower), so
    the ids come back with their item ids and are matched up here. Two rows of one item in a
    batch would be ambiguous; such a batch is inserted in order instead.
    """
    item_ids = [row["item_id"] for row in rows]
    if len(set(item_ids)) != len(item_ids):
        stmt = sa.insert(decisions).returning(decisions.c.id, sort_by_parameter_order=True)
        return [int(found) for found in conn.execute(stmt, rows).scalars()]
    stmt = sa.insert(decisions).returning(decisions.c.id, decisions.c.item_id)
    by_item = {int(item): int(found) for found, item in conn.execute(stmt, rows)}
    return [by_item[item] for item in item_ids]


def record_decisions(engine: Engine, new: Sequence[NewDecision]) -> list[Decision]:
    """Append ``new`` and one event each, in one transaction; the stored decisions, in order.

    Each event (kind ``decision`` for a policy's, ``review`` for a person's; ``what`` the
    decision, ``why`` its reason) carries the item's previous decision as ``before`` and this
    one as ``after`` (:meth:`Decision.summary`, both with their ``decision_id``). Inserted in
    multi-row batches, so a page of thousands is a few statements. Nothing is ever updated.
    """
    for item in new:
        _check(item)
    if not new:
        return []
    moment = now()
    rows = [
        {
            "item_id": item.item_id,
            "job_id": item.job_id,
            "decision": item.decision,
            "priority": item.priority,
            "rule": _cut("rule", item.rule),
            "policy_name": _cut("policy_name", item.policy_name),
            "policy_version": _cut("policy_version", item.policy_version),
            "policy_hash": _cut("policy_hash", item.policy_hash),
            "source": item.source,
            "actor": _cut("actor", item.actor),
            "reason": item.reason,
            "decided_at": moment,
        }
        for item in new
    ]
    with write(engine) as conn:
        ids = _insert(conn, rows)
        _log(conn, ids)
    return [
        _decision(SimpleNamespace(**row, id=decision_id))
        for decision_id, row in zip(ids, rows, strict=True)
    ]


def latest_decisions(
    engine: Engine,
    job_id: int,
    decision: str | Sequence[str] | None = None,
    *,
    after_item_id: int = 0,
    limit: int = 1000,
) -> list[Decision]:
    """One page of a job's current decisions, in item order: items with id > ``after_item_id``
    whose latest decision is ``decision`` (one or several; None: any), at most ``limit``.

    Page on with ``after_item_id=page[-1].item_id`` until a page comes back empty. Items never
    decided are not listed (``imgmod decide`` gives every item of a job a decision, ``unscanned``
    for those without an answer).
    """
    query = sa.select(decisions).where(
        decisions.c.job_id == job_id,
        decisions.c.item_id > after_item_id,
        decisions.c.id == _latest_id(),
    )
    if decision is not None:
        wanted = (decision,) if isinstance(decision, str) else tuple(decision)
        query = query.where(decisions.c.decision.in_(wanted))
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(decisions.c.item_id).limit(limit)).all()
    return [_decision(row) for row in rows]


def decision_counts(engine: Engine, job_id: int) -> dict[str, int]:
    """How many of a job's items stand at each decision now (latest per item)."""
    query = (
        sa.select(decisions.c.decision, sa.func.count())
        .where(decisions.c.job_id == job_id, decisions.c.id == _latest_id())
        .group_by(decisions.c.decision)
    )
    with engine.connect() as conn:
        return {str(kind): int(n) for kind, n in conn.execute(query)}


def decisions_by_policy(
    engine: Engine, job_id: int
) -> list[tuple[str | None, str | None, str, int]]:
    """Every decision ever recorded for a job (not only current ones), counted by (policy name,
    policy version, decision): how each policy version judged the job. Reviews have no policy."""
    query = (
        sa.select(
            decisions.c.policy_name,
            decisions.c.policy_version,
            decisions.c.decision,
            sa.func.count(),
        )
        .where(decisions.c.job_id == job_id)
        .group_by(decisions.c.policy_name, decisions.c.policy_version, decisions.c.decision)
        .order_by(sa.func.min(decisions.c.id), decisions.c.decision)
    )
    with engine.connect() as conn:
        return [(name, version, kind, int(n)) for name, version, kind, n in conn.execute(query)]


def item_decisions(engine: Engine, item_id: int) -> list[Decision]:
    """Every decision about one item, oldest first; the last is the current one."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(decisions).where(decisions.c.item_id == item_id).order_by(decisions.c.id)
        ).all()
    return [_decision(row) for row in rows]
