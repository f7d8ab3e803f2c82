"""Items on the producer's side: a job's lines as rows, queueing them, and reopening them.

The insert itself is in :mod:`worker.store.inserts`. A row is ``pending`` when inserted,
``queued`` once its message is (or is about to be) on the broker, and ``rejected`` for good
when its input line was invalid. The publishing window (:mod:`worker.window`) takes ``pending``
rows as the broker has room (:func:`take_pending`); ``imgmod resume``, stall detection and
``imgmod retry`` put rows back (:func:`reopen_open_items`, :func:`expired_or_stuck_ids`,
:func:`reset_failed`). What a worker does with a row is in :mod:`worker.store.leases` and
:mod:`worker.store.answers`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.store.engine import write
from worker.store.schema import items, jobs
from worker.store.sql import ID_BATCH, chunks, db_now, now

RAW_INPUT_LIMIT = 2000  # characters of a rejected line kept for the report


@dataclass(slots=True)
class NewItem:
    """One input line for :func:`~worker.store.inserts.insert_items`: a reference
    (``pending``) or a ``rejected`` line.

    Not frozen, though nothing changes one after it is made: a frozen dataclass's ``__init__``
    sets each of these 21 fields through ``object.__setattr__`` (3.5 µs a row against 0.6 µs
    here), and ``imgmod enqueue`` makes one per line of its input."""

    kind: str
    ref_key: str
    image_url: str | None
    oss_bucket: str | None
    oss_object: str | None
    oss_region: str | None
    data_id: str | None
    referer: str | None
    source: str
    line: int
    state: str
    last_error: str | None = None
    raw_input: str | None = None
    etag: str | None = None  # an OSS object as listed (None for other inputs)
    size: int | None = None
    last_modified: datetime | None = None
    identity: str | None = None  # worker.identity: the image, for reuse of its answer
    content_key: str | None = None
    local_path: str | None = None  # a local file: uploaded at call time (worker.uploads)
    sha256: str | None = None
    # The service this row asks (one row per reference and service of the job, migration 0009);
    # None: the job's first service, filled in by insert_rows.
    service: str | None = None


def rejected_ref_key(source: str, line: int, identity: str = "") -> str:
    """The dedup key of a rejected line in its job.

    ``identity`` (the reader's :attr:`worker.sources.Rejected.identity`) tells inputs apart
    beyond their display name: enqueuing the same unchanged file twice adds nothing, while two
    ``urls.txt`` from different folders, or two runs of ``-``, keep a row per rejected line.
    Without it, the display ``source`` and ``line`` stand in (rows built by hand, in tests).
    """
    return f"rejected:{identity}" if identity else f"rejected:{source}:{line}"


def first_service(conn: Connection, job_id: int) -> str:
    """The job's first service: the one a row built without a service (a rejected line, rows
    built by hand) is recorded under."""
    services = conn.execute(sa.select(jobs.c.service).where(jobs.c.id == job_id)).scalar_one()
    return str(services).split(",")[0]


def mark_queued(engine: Engine, ids: Sequence[int]) -> None:
    """``pending`` -> ``queued`` for the rows whose message is now on the broker.

    Rows a fast worker already claimed (or finished) are left alone.
    """
    if not ids:
        return
    moment = now()
    with write(engine) as conn:
        for chunk in chunks(ids):
            conn.execute(
                sa.update(items)
                .where(items.c.id.in_(chunk), items.c.state == "pending")
                .values(state="queued", queued_at=moment, updated_at=moment)
            )


# ---- the publishing window (worker.window): pending rows wait here until the broker has room


def jobs_with_pending(engine: Engine) -> list[int]:
    """Ids of the jobs that have ``pending`` rows, oldest job first (one index probe per job).

    The window's refiller asks each second (:class:`worker.window.RefillLoop`), and the
    answer is mostly "none": the statement is built once, not per call."""
    with engine.connect() as conn:
        return [int(i) for i in conn.execute(_JOBS_WITH_PENDING).scalars().all()]


_JOBS_WITH_PENDING = (
    sa.select(jobs.c.id)
    .where(sa.exists().where(items.c.job_id == jobs.c.id, items.c.state == "pending"))
    .order_by(jobs.c.id)
)


def take_pending(engine: Engine, job_id: int, limit: int) -> list[int]:
    """Up to ``limit`` of the job's ``pending`` rows, now ``queued``: their ids, ascending.

    One atomic ``UPDATE ... WHERE id IN (SELECT ... LIMIT n) AND state = 'pending' RETURNING``,
    so two refillers never take the same row: SQLite runs it under the write lock, PostgreSQL
    locks the chosen rows ``FOR UPDATE SKIP LOCKED`` (a concurrent taker passes over them, and
    a row taken meanwhile fails the outer ``state = 'pending'``). SQLite takes the oldest rows
    (the ``(job_id, state)`` index is in id order); PostgreSQL takes them in table order, which
    is insertion order up to reused space: an ``ORDER BY id`` there makes the planner walk the
    primary key past every finished row (~170 ms at a million rows, against ~10 ms).
    """
    if limit <= 0:
        return []
    moment = now()
    chosen = items.alias("chosen")
    with write(engine) as conn:
        pick = sa.select(chosen.c.id).where(
            chosen.c.job_id == job_id,
            chosen.c.state == "pending",
            chosen.c.waits_for.is_(None),  # a waiter (worker.store.waiters) is never taken
        )
        taken: list[sa.ColumnElement[bool]] = [
            items.c.id.in_(pick.order_by(chosen.c.id).limit(limit).scalar_subquery())
        ]
        if conn.dialect.name == "postgresql":
            # A CTE, evaluated once: as an IN (subquery) PostgreSQL may run the LIMIT again
            # per row it updates, and take far more than ``limit`` rows (measured: all).
            picked = pick.limit(limit).with_for_update(skip_locked=True).cte("picked")
            taken = [items.c.id == picked.c.id, items.c.state == "pending"]
        # (SQLite: no outer state test, the write lock already makes the statement atomic, and
        # with one its planner scans the state index, every pending row, instead of the ids.)
        ids = conn.execute(
            sa.update(items)
            .where(*taken)
            .values(state="queued", queued_at=moment, updated_at=moment)
            .returning(items.c.id)
        ).scalars()
        return sorted(int(i) for i in ids)


def refresh_planner_statistics(engine: Engine, rows_known: int) -> bool:
    """``ANALYZE items`` on PostgreSQL when its planner believes the table holds fewer than
    half of ``rows_known`` (rows a caller has just inserted, so at least that many exist);
    returns whether it ran. SQLite: nothing (its planner keeps no row counts unless asked).

    Why: a table never analyzed, or analyzed while it was small, is planned as holding a row
    or two. :func:`take_pending`'s join then becomes a nested loop that compares every picked
    id with every pending row: 3,000 rows took 2.0 s on a new database (``EXPLAIN ANALYZE``:
    9 million rows removed by the join filter), 0.14 s once analyzed, so a fresh job's first
    messages waited seconds for it. Autovacuum analyzes only about a minute later. At most
    one ``ANALYZE`` per doubling of what the caller inserted: about seven for a million rows,
    each reading a sample of 30,000 rows. A user who does not own the table gets a warning
    from PostgreSQL and no ``ANALYZE``; nothing fails.
    """
    if engine.dialect.name != "postgresql" or rows_known <= 0:
        return False
    with engine.connect() as conn:
        believed = conn.execute(
            sa.text("SELECT reltuples FROM pg_class WHERE oid = CAST('items' AS regclass)")
        ).scalar()
        if believed is not None and float(believed) >= rows_known / 2:
            return False
        conn.execute(sa.text("ANALYZE items"))
        conn.commit()
    return True


def return_to_pending(engine: Engine, ids: Sequence[int]) -> None:
    """``queued`` -> ``pending`` for rows taken whose messages may not have reached the broker
    (a failed publish): the window publishes them again later. Claimed rows are left alone."""
    if not ids:
        return
    moment = now()
    with write(engine) as conn:
        for chunk in chunks(ids):
            conn.execute(
                sa.update(items)
                .where(items.c.id.in_(chunk), items.c.state == "queued")
                .values(state="pending", updated_at=moment)
            )


def reopen_open_items(engine: Engine, job_id: int, *, include_queued: bool = True) -> int:
    """Put the job's ``queued`` rows (optionally) and ``running`` rows with an expired lease
    back to ``pending``, for the window to publish again; returns the job's ``pending`` rows.

    For a broker that lost its messages (``imgmod resume``, stall detection). A reopened row
    whose message did survive is claimed by it as usual (``pending`` is claimable); the copy
    published later finds it taken and costs one no-op claim.
    """
    reopen = sa.and_(items.c.state == "running", items.c.lease_expires_at < db_now(engine.dialect))
    if include_queued:
        reopen = sa.or_(items.c.state == "queued", reopen)
    with write(engine) as conn:
        conn.execute(
            sa.update(items)
            .where(items.c.job_id == job_id, reopen)
            .values(state="pending", lease_owner=None, lease_expires_at=None, updated_at=now())
        )
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(
                    items.c.job_id == job_id, items.c.state == "pending"
                )
            ).scalar_one()
        )


# ---- republishing: rows whose messages may be lost, and failed rows to try again


def expired_or_stuck_ids(
    engine: Engine, job_id: int, *, include_queued: bool = True, batch: int = ID_BATCH
) -> Iterator[list[int]]:
    """Ids to publish again, in batches: pending, queued (optionally) and running with an
    expired lease. Keyset pagination, one short read per batch, so rows may change meanwhile;
    :func:`~worker.store.leases.claim_item` settles any overlap."""
    states = ("pending", "queued") if include_queued else ("pending",)
    last = 0
    while True:
        stuck = sa.or_(
            items.c.state.in_(states),
            sa.and_(items.c.state == "running", items.c.lease_expires_at < db_now(engine.dialect)),
        )
        with engine.connect() as conn:
            ids = list(
                conn.execute(
                    sa.select(items.c.id)
                    .where(items.c.job_id == job_id, items.c.id > last, stuck)
                    .order_by(items.c.id)
                    .limit(batch)
                ).scalars()
            )
        if not ids:
            return
        yield ids
        last = ids[-1]


def reset_failed(engine: Engine, job_id: int, code: str | None = None) -> list[int]:
    """``failed`` -> ``pending`` with attempts reset (only ``last_code == code`` when given);
    reopens the job. Returns the ids to publish again."""
    moment = now()
    where = [items.c.job_id == job_id, items.c.state == "failed"]
    if code is not None:
        where.append(items.c.last_code == code)
    with write(engine) as conn:
        ids = [
            int(i)
            for i in conn.execute(
                sa.update(items)
                .where(*where)
                .values(state="pending", attempts=0, finished_at=None, updated_at=moment)
                .returning(items.c.id)
            ).scalars()
        ]
        if ids:
            conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(finished_at=None))
    ids.sort()
    return ids
