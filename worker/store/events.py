"""The events log: everything imgmod did to or about an image beyond the call, append-only.

One row per event (a policy's decision, a reviewer's decision or undo, an action on an OSS
object, a restore, a webhook delivery): what, who, when, why, under which policy version, and
the state before and after. imgmod only ever inserts here (:func:`append_event`,
:func:`append_events`); nothing updates or deletes a row, so the log is the image's story and
the current state of anything is derived from it (or kept beside it, as ``object_actions`` is,
with every change also logged here).

``kind`` is one of :data:`EVENT_KINDS`; ``what`` names the change in one word (``block``,
``quarantine``, ``restore``, ``delivered``...); ``before``/``after``/``detail`` are small JSON
objects. :func:`item_history` reads one image's whole story: its row, its stored answer and its
events, in time order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.store.engine import write
from worker.store.schema import events, items, result_labels, results
from worker.store.sql import now

EVENT_KINDS = ("decision", "review", "undo", "action", "restore", "webhook")


@dataclass(frozen=True)
class NewEvent:
    """An event to append. ``at`` defaults to the time of the write (this process's clock)."""

    kind: str
    actor: str
    what: str
    job_id: int | None = None
    item_id: int | None = None
    why: str | None = None
    policy_name: str | None = None
    policy_version: str | None = None
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None
    detail: Mapping[str, Any] | None = None
    at: datetime | None = None


@dataclass(frozen=True)
class Event:
    """One row of the log, as stored."""

    id: int
    at: datetime
    kind: str
    actor: str
    what: str
    job_id: int | None
    item_id: int | None
    why: str | None
    policy_name: str | None
    policy_version: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    detail: dict[str, Any] | None


def _row(event: NewEvent, moment: datetime) -> dict[str, Any]:
    if event.kind not in EVENT_KINDS:
        raise ValueError(f"unknown event kind {event.kind!r}; use one of {', '.join(EVENT_KINDS)}")
    return _clip_text(
        {
            "at": event.at or moment,
            "kind": event.kind,
            "actor": event.actor,
            "job_id": event.job_id,
            "item_id": event.item_id,
            "what": event.what,
            "why": event.why,
            "policy_name": event.policy_name,
            "policy_version": event.policy_version,
            "before": None if event.before is None else dict(event.before),
            "after": None if event.after is None else dict(event.after),
            "detail": None if event.detail is None else dict(event.detail),
        }
    )


_LENGTHS: dict[str, int] = {
    column.name: length
    for column in events.columns
    if (length := getattr(column.type, "length", None)) is not None
}


def _clip_text(row: dict[str, Any]) -> dict[str, Any]:
    """Cut strings to their column's length (as :func:`~worker.store.sql.clip` does; inlined,
    because an events batch can be 100,000 rows)."""
    for name, length in _LENGTHS.items():
        value = row[name]
        if value is not None and len(value) > length:
            row[name] = value[:length]
    return row


def insert_events(
    conn: Connection, new: Sequence[NewEvent], *, returning: bool = True
) -> list[int]:
    """Append ``new`` inside the caller's transaction; their ids, in order (with
    ``returning=False``: an empty list, and one ``executemany``, far faster on SQLite, where an
    ordered RETURNING is one statement per row).

    For store modules that write a state change and its event in one transaction (decisions,
    object actions); everyone else calls :func:`append_events`.
    """
    if not new:
        return []
    moment = now()
    rows = [_row(event, moment) for event in new]
    if not returning:
        conn.execute(sa.insert(events), rows)
        return []
    stmt = sa.insert(events).returning(events.c.id, sort_by_parameter_order=True)
    return [int(found) for found in conn.execute(stmt, rows).scalars()]


def append_events(engine: Engine, new: Sequence[NewEvent]) -> list[int]:
    """Append events in one transaction; their ids, in the order given. Never updates a row."""
    with write(engine) as conn:
        return insert_events(conn, new)


def append_event(engine: Engine, event: NewEvent) -> int:
    """Append one event; its id."""
    return append_events(engine, [event])[0]


def _event(row: Any) -> Event:
    return Event(
        id=int(row.id),
        at=row.at,
        kind=row.kind,
        actor=row.actor,
        what=row.what,
        job_id=row.job_id,
        item_id=row.item_id,
        why=row.why,
        policy_name=row.policy_name,
        policy_version=row.policy_version,
        before=row.before,
        after=row.after,
        detail=row.detail,
    )


def item_events(engine: Engine, item_id: int) -> list[Event]:
    """Every event about one item, oldest first (by id: the order they were appended)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(events).where(events.c.item_id == item_id).order_by(events.c.id)
        ).all()
    return [_event(row) for row in rows]


def job_events(
    engine: Engine,
    job_id: int,
    *,
    kinds: Sequence[str] = (),
    after_id: int = 0,
    limit: int = 1000,
) -> list[Event]:
    """One page of a job's events in id order: those with id > ``after_id``, at most ``limit``.

    Page on with ``after_id=page[-1].id`` until a page comes back empty. ``kinds`` filters
    (empty: every kind).
    """
    query = sa.select(events).where(events.c.job_id == job_id, events.c.id > after_id)
    if kinds:
        query = query.where(events.c.kind.in_(kinds))
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(events.c.id).limit(limit)).all()
    return [_event(row) for row in rows]


# --------------------------------------------------------------------------- one image's story


@dataclass(frozen=True)
class StoredAnswer:
    """The answer stored for an item (``results``), with its labels."""

    request_id: str | None
    code: str | None
    msg: str | None
    risk_level: str | None
    moderated_at: datetime
    labels: tuple[tuple[str, float | None], ...]
    ext: dict[str, Any] | None


@dataclass(frozen=True)
class ItemHistory:
    """What SQL holds about one item: its row (reference, state, attempts, times), its stored
    answer (None when there is none) and its events, oldest first."""

    item: dict[str, Any]
    answer: StoredAnswer | None
    events: list[Event] = field(default_factory=list)


_ITEM_FIELDS = (
    "id",
    "job_id",
    "service",
    "kind",
    "ref_key",
    "image_url",
    "oss_bucket",
    "oss_object",
    "local_path",
    "data_id",
    "source",
    "line",
    "state",
    "attempts",
    "last_code",
    "last_message",
    "last_error",
    "reused_from",
    "created_at",
    "queued_at",
    "finished_at",
    "updated_at",
)


def item_history(engine: Engine, item_id: int) -> ItemHistory | None:
    """One item's story from SQL (its row, stored answer and events); None when no such item.

    Three reads on one connection; the events are the append-only log, so two calls a moment
    apart differ only by what was appended in between.
    """
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(*(items.c[name] for name in _ITEM_FIELDS)).where(items.c.id == item_id)
        ).first()
        if row is None:
            return None
        stored = conn.execute(
            sa.select(results).where(results.c.item_id == item_id).order_by(results.c.id)
        ).first()
        answer = None
        if stored is not None:
            labels = conn.execute(
                sa.select(result_labels.c.label, result_labels.c.confidence)
                .where(result_labels.c.result_id == stored.id)
                .order_by(result_labels.c.id)
            ).all()
            answer = StoredAnswer(
                request_id=stored.request_id,
                code=stored.code,
                msg=stored.msg,
                risk_level=stored.risk_level,
                moderated_at=stored.moderated_at,
                labels=tuple((label, confidence) for label, confidence in labels),
                ext=stored.ext,
            )
        found = conn.execute(
            sa.select(events).where(events.c.item_id == item_id).order_by(events.c.id)
        ).all()
    return ItemHistory(item=dict(row._mapping), answer=answer, events=[_event(e) for e in found])


def find_items(
    engine: Engine, ref: str, *, job_id: int | None = None, limit: int = 20
) -> list[tuple[int, int]]:
    """(item id, job id) of the items a reference names, newest first: by ``ref_key``, image
    URL, ``oss://bucket/key``, local path or dataId (exact matches; one image may sit in
    several jobs). ``job_id`` keeps one job's."""
    match = [
        items.c.ref_key == ref,
        items.c.image_url == ref,
        items.c.local_path == ref,
        items.c.data_id == ref,
    ]
    if ref.startswith("oss://") and "/" in ref[6:]:
        bucket, _, key = ref[6:].partition("/")
        match.append(sa.and_(items.c.oss_bucket == bucket, items.c.oss_object == key))
    query = sa.select(items.c.id, items.c.job_id).where(sa.or_(*match))
    if job_id is not None:
        query = query.where(items.c.job_id == job_id)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(items.c.id.desc()).limit(limit)).all()
    return [(int(item), int(job)) for item, job in rows]
