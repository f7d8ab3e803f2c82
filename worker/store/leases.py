"""Items on the worker's side: claiming a row under a lease, keeping it, and letting it go.

Correctness under concurrency rests on single atomic statements, not on locks held in Python:
:func:`claim_items` is one ``UPDATE ... WHERE id IN (...) AND <claimable> RETURNING``, so of two
workers handed the same (redelivered) message, exactly one gets each row. A lease runs on the
database's clock (:func:`worker.store.sql.db_now`); its owner renews it (:func:`renew_leases`)
while it works, and a row whose lease ran out is taken over (:func:`claim_items`) or swept back
to the queue (:func:`requeue_expired`). Handing a row back (:func:`record_retry`) needs the
lease; failing it (:func:`record_failure`) only needs that no one else holds a live one. Storing
a billed answer needs nothing: :func:`worker.store.answers.record_result`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.params import ImageRef
from worker.store.engine import write
from worker.store.jobs import job_key
from worker.store.schema import OPEN_STATES, UTCDateTime, items, jobs
from worker.store.sql import ID_BATCH, chunks, db_now, now

_CODE_LENGTH = 64  # items.last_code


@dataclass(frozen=True)
class ClaimedItem:
    """An item leased to one worker: the image to moderate, with its job's request settings.

    ``job_key`` names the job across databases (:func:`worker.store.jobs.job_key`): two
    databases can both have a job 1 and an item 7, never the same job key.
    """

    id: int
    job_id: int
    kind: str
    ref: ImageRef
    attempts: int
    service: str
    info_type: str
    job_key: str
    max_calls: int | None = None  # the job's cap on billed calls (worker.budget); None: none


def _lease_over(moment: sa.ColumnElement[datetime]) -> sa.ColumnElement[bool]:
    return sa.or_(items.c.lease_expires_at.is_(None), items.c.lease_expires_at < moment)


def _claimable(moment: sa.ColumnElement[datetime]) -> sa.ColumnElement[bool]:
    return sa.or_(
        items.c.state.in_(("pending", "queued")),
        sa.and_(items.c.state == "running", _lease_over(moment)),
    )


def _of_job(column: sa.Column[Any], name: str) -> sa.Label[Any]:
    """The claimed row's job's ``column``, read by the claim statement itself (a primary-key
    probe per claim, so a worker needs no cache of job settings that could go stale).

    SQLite's RETURNING names columns without their table (``WHERE id = job_id``): inside the
    subquery ``id`` is the job's and ``job_id`` the item's, as long as ``jobs`` has no
    ``job_id`` column (tests/integration/test_store.py claims rows of two jobs to hold it)."""
    return (
        sa.select(column).where(jobs.c.id == items.c.job_id).correlate(items).scalar_subquery()
    ).label(name)


_REF_FIELDS = tuple(ImageRef.__dataclass_fields__)
# The columns a claim returns: built once, not per claim (this is the hot path).
_CLAIMED_COLS = (
    items.c.id,
    items.c.job_id,
    items.c.kind,
    items.c.attempts,
    *(items.c[name] for name in _REF_FIELDS),
    items.c.service,
    _of_job(jobs.c.info_type, "job_info_type"),
    _of_job(jobs.c.name, "job_name"),
    _of_job(jobs.c.created_at, "job_created_at"),
    _of_job(jobs.c.max_calls, "job_max_calls"),
)


@functools.cache
def _claim_statement(dialect: str) -> sa.Update:
    """The claim, built once per database kind (building it costs more than running it on
    SQLite); bound: ``claim_ids`` (expanding), ``owner``, ``lease_seconds``, ``moment``."""
    return (
        sa.update(items)
        .where(
            items.c.id.in_(sa.bindparam("claim_ids", expanding=True)),
            _claimable(db_now(dialect)),
        )
        .values(
            state="running",
            lease_owner=sa.bindparam("owner"),
            lease_expires_at=db_now(dialect, sa.bindparam("lease_seconds", type_=sa.Float())),
            attempts=items.c.attempts + 1,
            updated_at=sa.bindparam("moment", type_=UTCDateTime()),
        )
        .returning(*_CLAIMED_COLS)
    )


def claim_item(
    engine: Engine, item_id: int, owner: str, lease_seconds: float
) -> ClaimedItem | None:
    """Lease the item to ``owner``, or None when it is finished, rejected or leased elsewhere
    (:func:`claim_items` of one id)."""
    claimed = claim_items(engine, (item_id,), owner, lease_seconds)
    return claimed[0] if claimed else None


def claim_items(
    engine: Engine, item_ids: Sequence[int], owner: str, lease_seconds: float
) -> list[ClaimedItem]:
    """Lease to ``owner`` those of the items that are claimable; the others (finished,
    rejected or leased elsewhere) are missing from the answer, which is in ``item_ids`` order.

    The claim is one atomic ``UPDATE ... WHERE id IN (...) AND <claimable> RETURNING``: each
    row is decided by the database alone, so when a message (or two messages naming the same
    id) is delivered twice, exactly one worker gets each row; the others see it missing and
    let it be. An expired lease (a worker that died, or stopped renewing) may be taken over.
    The leases run ``lease_seconds`` on the database's clock; the owner keeps them alive with
    :func:`renew_leases`. ``attempts`` counts claims. Each row's service (one row per
    reference and service) and its job's infoType and key come back from the same statement.
    """
    if not item_ids:
        return []
    params = {
        "claim_ids": list(item_ids),
        "owner": owner,
        "lease_seconds": float(lease_seconds),
        "moment": now(),
    }
    with write(engine) as conn:
        rows = conn.execute(_claim_statement(conn.dialect.name), params).all()
    by_id = {row.id: _claimed(row) for row in rows}
    return [by_id[i] for i in dict.fromkeys(item_ids) if i in by_id]


def _claimed(row: sa.Row[Any]) -> ClaimedItem:
    found = row._mapping
    return ClaimedItem(
        id=row.id,
        job_id=row.job_id,
        kind=row.kind,
        ref=ImageRef(**{name: found[name] for name in _REF_FIELDS}),
        attempts=row.attempts,
        service=row.service,
        info_type=row.job_info_type,
        job_key=job_key(row.job_id, row.job_name, row.job_created_at),
        max_calls=row.job_max_calls,
    )


def extend_lease(engine: Engine, item_id: int, owner: str, lease_seconds: float) -> bool:
    """Push the lease out; False when ``owner`` no longer holds the item (stop working on it)."""
    with write(engine) as conn:
        result = conn.execute(
            sa.update(items)
            .where(items.c.id == item_id, items.c.state == "running", items.c.lease_owner == owner)
            .values(lease_expires_at=db_now(conn.dialect, lease_seconds), updated_at=now())
        )
    return result.rowcount == 1


def renew_leases(engine: Engine, held: Mapping[int, str], lease_seconds: float) -> set[int]:
    """Push out the leases of every row in ``held`` (id -> owner) still leased to its owner,
    in one statement per thousand rows; returns the ids renewed. A held id missing from the
    answer was taken over (its lease ran out first) or closed: its holder should not call."""
    renewed: set[int] = set()
    if not held:
        return renewed
    ids = sorted(held)
    with write(engine) as conn:
        for chunk in chunks(ids):
            owners = {held[i] for i in chunk}
            rows = conn.execute(
                sa.update(items)
                .where(
                    items.c.id.in_(chunk),
                    items.c.state == "running",
                    items.c.lease_owner.in_(owners),
                )
                .values(lease_expires_at=db_now(conn.dialect, lease_seconds))
                .returning(items.c.id, items.c.lease_owner)
            )
            # Owners are unique per claim, but check the pair: one statement covers many rows.
            renewed.update(int(i) for i, owner in rows if held.get(int(i)) == owner)
    return renewed


def requeue_expired(
    engine: Engine, exclude: Sequence[int] = (), limit: int = ID_BATCH
) -> list[int]:
    """``running`` rows whose lease ran out on the database's clock -> ``queued``, lease
    cleared; returns their ids, to publish again. Their owner died or stopped renewing.

    One statement: of several workers sweeping at once, each row goes to exactly one. Rows in
    ``exclude`` (the caller's own, whose renewal may merely be late) are left alone. A late
    answer of the old owner is still stored (:func:`~worker.store.answers.record_result` takes
    a billed answer from anyone); its retry or failure no longer applies (they need the lease).
    """
    with write(engine) as conn:
        expired = (
            sa.select(items.c.id)
            .where(
                items.c.state == "running",
                items.c.lease_expires_at < db_now(conn.dialect),
                items.c.id.not_in(list(exclude)) if exclude else sa.true(),
            )
            .order_by(items.c.id)
            .limit(limit)
            .scalar_subquery()
        )
        ids = conn.execute(
            sa.update(items)
            .where(
                items.c.id.in_(expired),
                items.c.state == "running",
                items.c.lease_expires_at < db_now(conn.dialect),
            )
            .values(
                state="queued",
                lease_owner=None,
                lease_expires_at=None,
                last_error="lease expired: its worker stopped renewing it",
                queued_at=now(),
                updated_at=now(),
            )
            .returning(items.c.id)
        ).scalars()
        found = sorted(int(i) for i in ids)
    return found


def lease_left(engine: Engine, item_id: int) -> float | None:
    """Seconds left on the lease of an open row (0 when open but not leased); None when the
    row is closed or gone. Consulted only when a claim failed, so off the hot path."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(
                items.c.state,
                items.c.lease_expires_at,
                db_now(conn.dialect).label("now"),
            ).where(items.c.id == item_id)
        ).one_or_none()
    if row is None or row.state not in OPEN_STATES:
        return None
    expires: datetime | None = row.lease_expires_at
    if expires is None:
        return 0.0
    moment: datetime = row.now
    return max(0.0, (expires - moment).total_seconds())


def record_retry(
    engine: Engine,
    item_id: int,
    owner: str,
    code: str,
    message: str | None,
    error: str | None,
) -> bool:
    """Hand the item back (``queued``, lease cleared) for a later attempt.

    Only while ``owner`` still holds it: a worker whose lease was taken over must not undo the
    new owner's work. Returns whether the row changed.
    """
    moment = now()
    with write(engine) as conn:
        result = conn.execute(
            sa.update(items)
            .where(items.c.id == item_id, items.c.state == "running", items.c.lease_owner == owner)
            .values(
                state="queued",
                lease_owner=None,
                lease_expires_at=None,
                last_code=code[:_CODE_LENGTH],
                last_message=message,
                last_error=error,
                updated_at=moment,
            )
        )
    return result.rowcount == 1


def record_failure(
    engine: Engine,
    item_id: int,
    owner: str,
    code: str,
    message: str | None,
    error: str | None,
) -> bool:
    """Mark the item ``failed`` for good (``imgmod retry-failed`` can reopen it).

    Never overrides ``done`` or ``rejected``, nor a live lease held by another worker.
    Returns whether the row changed.
    """
    moment = now()
    with write(engine) as conn:
        leased_elsewhere = sa.and_(
            items.c.state == "running",
            items.c.lease_owner.is_distinct_from(owner),
            items.c.lease_expires_at >= db_now(conn.dialect),
        )
        result = conn.execute(
            sa.update(items)
            .where(
                items.c.id == item_id,
                items.c.state.not_in(("done", "rejected")),
                ~leased_elsewhere,
            )
            .values(
                state="failed",
                lease_owner=None,
                lease_expires_at=None,
                last_code=code[:_CODE_LENGTH],
                last_message=message,
                last_error=error,
                finished_at=moment,
                updated_at=moment,
            )
        )
    return result.rowcount == 1
