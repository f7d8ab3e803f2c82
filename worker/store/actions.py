"""Reads and writes of ``imgmod act`` / ``imgmod restore``: which items a decision names, the
state of the action on each object (``object_actions``), webhook deliveries, and their events.

Every change of an object is written in two steps, so a killed run resumes correctly: first the
intent (:func:`begin_object_action`: state ``applying`` or ``restoring``, with what the object
was before, e.g. its ACL), then the object is changed, then the outcome and its event in one
transaction (:func:`finish_object_action`). A rerun finds an ``applying`` row and completes it
from what the row remembers, instead of reading the already-changed object again.

The latest decision of an item (its ``decisions`` row with the highest id) comes from
:mod:`worker.store.decisions`; events are appended through :mod:`worker.store.events`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.store.decisions import latest_decisions
from worker.store.engine import write
from worker.store.events import NewEvent, append_event, insert_events
from worker.store.schema import decisions, items, object_actions, webhook_deliveries
from worker.store.sql import chunks, insert_for, now

PAGE = 500  # items per read: one short read per page, memory flat on any job


@dataclass(frozen=True)
class DecidedItem:
    """One item whose latest decision is the one asked for, with what an action needs."""

    item_id: int
    job_id: int
    kind: str
    image_url: str | None
    bucket: str | None
    key: str | None
    region: str | None
    data_id: str | None
    decision: str
    decision_id: int
    policy_name: str | None
    policy_version: str | None
    ref_key: str = ""  # the reference: a job of several services has a row per service of it


@dataclass(frozen=True)
class ObjectAction:
    """The current state of one action on one OSS object (a row of ``object_actions``)."""

    id: int
    item_id: int
    action: str  # freeze | move
    state: str  # applying | applied | restoring | restored
    bucket: str
    original_key: str
    current_key: str
    acl_before: str | None


def decided_pages(
    engine: Engine, job_id: int, decision: str | None, page: int = PAGE
) -> Iterator[list[DecidedItem]]:
    """Items of the job whose latest decision is ``decision`` (any, when None), by item id, a
    page at a time: :func:`~worker.store.decisions.latest_decisions` joined to the items."""
    after = 0
    while True:
        found = latest_decisions(engine, job_id, decision, after_item_id=after, limit=page)
        if not found:
            return
        with engine.connect() as conn:
            rows = {
                row.id: row
                for row in conn.execute(
                    sa.select(items).where(items.c.id.in_([d.item_id for d in found]))
                )
            }
        yield [
            DecidedItem(
                item_id=made.item_id,
                job_id=rows[made.item_id].job_id,
                kind=rows[made.item_id].kind,
                image_url=rows[made.item_id].image_url,
                bucket=rows[made.item_id].oss_bucket,
                key=rows[made.item_id].oss_object,
                region=rows[made.item_id].oss_region,
                data_id=rows[made.item_id].data_id,
                decision=made.decision,
                decision_id=made.id,
                policy_name=made.policy_name,
                policy_version=made.policy_version,
                ref_key=rows[made.item_id].ref_key,
            )
            for made in found
        ]
        after = found[-1].item_id


def first_of_each_object(
    engine: Engine, job_id: int, decision: str | None, page: Sequence[DecidedItem]
) -> list[DecidedItem]:
    """The items of ``page`` that act for their object: a job of several services has a row
    per (reference, service), and when two services' rows of one image carry the decision, a
    second freeze would record the first one's ACL ("private") as the object's own, and a
    restore would leave it private. So the object is acted on once, by the smallest-id row of
    its reference whose current decision is ``decision`` (any decision when None), whichever
    page it falls on; the others are skipped. One read per page."""
    keys = sorted({item.ref_key for item in page})
    newest = (
        sa.select(sa.func.max(decisions.c.id))
        .where(decisions.c.item_id == items.c.id)
        .correlate(items)
        .scalar_subquery()
    )
    query = (
        sa.select(items.c.ref_key, sa.func.min(items.c.id))
        .select_from(items.join(decisions, decisions.c.id == newest))
        .where(items.c.job_id == job_id, items.c.ref_key.in_(keys))
        .group_by(items.c.ref_key)
    )
    if decision is not None:
        query = query.where(decisions.c.decision == decision)
    with engine.connect() as conn:
        first = {str(key): int(item_id) for key, item_id in conn.execute(query)}
    return [item for item in page if first.get(item.ref_key) == item.item_id]


def object_actions_for(
    engine: Engine, item_ids: Sequence[int], action: str | None = None
) -> dict[tuple[int, str], ObjectAction]:
    """The recorded actions of these items, by (item id, action)."""
    found: dict[tuple[int, str], ObjectAction] = {}
    with engine.connect() as conn:
        for batch in chunks(list(item_ids)):
            query = sa.select(object_actions).where(object_actions.c.item_id.in_(batch))
            if action is not None:
                query = query.where(object_actions.c.action == action)
            for row in conn.execute(query):
                found[(row.item_id, row.action)] = _action(row)
    return found


def begin_object_action(
    engine: Engine,
    item: DecidedItem,
    action: str,
    state: str,
    current_key: str,
    acl_before: str | None,
) -> None:
    """Record the intent (``applying``/``restoring``) before the object is touched."""
    assert item.bucket is not None and item.key is not None
    values = {
        "state": state,
        "current_key": current_key,
        "acl_before": acl_before,
        "updated_at": now(),
    }
    with write(engine) as conn:
        stmt = insert_for(conn, object_actions).values(
            item_id=item.item_id,
            job_id=item.job_id,
            action=action,
            bucket=item.bucket,
            original_key=item.key,
            **values,
        )
        conn.execute(stmt.on_conflict_do_update(index_elements=["item_id", "action"], set_=values))


def finish_object_action(
    engine: Engine, item_id: int, action: str, state: str, current_key: str, event: NewEvent
) -> None:
    """The outcome (``applied``/``restored``) and its event, in one transaction."""
    with write(engine) as conn:
        conn.execute(
            object_actions.update()
            .where(object_actions.c.item_id == item_id, object_actions.c.action == action)
            .values(state=state, current_key=current_key, updated_at=now())
        )
        insert_events(conn, [event])


def record_event(engine: Engine, event: NewEvent) -> None:
    append_event(engine, event)


def delivered_ids(engine: Engine, url: str, item_ids: Sequence[int]) -> set[tuple[int, int]]:
    """(item id, decision id) pairs already delivered to ``url``."""
    found: set[tuple[int, int]] = set()
    with engine.connect() as conn:
        for batch in chunks(list(item_ids)):
            rows = conn.execute(
                sa.select(webhook_deliveries.c.item_id, webhook_deliveries.c.decision_id).where(
                    webhook_deliveries.c.url == url,
                    webhook_deliveries.c.state == "delivered",
                    webhook_deliveries.c.item_id.in_(batch),
                )
            )
            found.update((int(r.item_id), int(r.decision_id)) for r in rows)
    return found


def record_delivery(
    engine: Engine,
    item: DecidedItem,
    url: str,
    state: str,
    attempts: int,
    status: int | None,
    error: str | None,
    event: NewEvent,
) -> None:
    """One delivery's outcome (attempts add up over reruns) and its event, in one transaction."""
    with write(engine) as conn:
        stmt = insert_for(conn, webhook_deliveries).values(
            item_id=item.item_id,
            job_id=item.job_id,
            url=url,
            decision_id=item.decision_id,
            state=state,
            attempts=attempts,
            last_status=status,
            last_error=error,
            updated_at=now(),
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["item_id", "url", "decision_id"],
                set_={
                    "state": state,
                    "attempts": webhook_deliveries.c.attempts + attempts,
                    "last_status": status,
                    "last_error": error,
                    "updated_at": now(),
                },
            )
        )
        insert_events(conn, [event])


def _action(row: Any) -> ObjectAction:
    return ObjectAction(
        id=row.id,
        item_id=row.item_id,
        action=row.action,
        state=row.state,
        bucket=row.bucket,
        original_key=row.original_key,
        current_key=row.current_key,
        acl_before=row.acl_before,
    )
