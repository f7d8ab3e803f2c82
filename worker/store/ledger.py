"""The ledger of billed calls: one row per (UTC day, job, service), counting Code-200 answers.

Written by the worker once per billed answer (:func:`record_billed`, one upsert), read by
``imgmod costs`` (:func:`billed_rows`), ``imgmod status`` (:func:`billed_for_job`,
:func:`billed_on`) and by :mod:`worker.budget`, which seeds a Redis counter that was lost
(a restart without persistence) from here rather than from zero: a budget must not grow back
because Redis forgot what was spent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.store.engine import write
from worker.store.schema import billed_calls, jobs
from worker.store.sql import insert_for


@dataclass(frozen=True)
class BilledRow:
    """Billed calls of one job and service on one UTC day."""

    day: date
    job: str
    service: str
    calls: int


def record_billed(engine: Engine, job_id: int, service: str, day: date, calls: int = 1) -> None:
    """Add ``calls`` billed answers to the (day, job, service) row, creating it if new.

    One ``INSERT ... ON CONFLICT DO UPDATE``: concurrent workers never lose a count."""
    with write(engine) as conn:
        stmt = insert_for(conn, billed_calls).values(
            day=day, job_id=job_id, service=service, calls=calls
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["day", "job_id", "service"],
                set_={"calls": billed_calls.c.calls + stmt.excluded.calls},
            )
        )


def billed_for_job(engine: Engine, job_id: int) -> int:
    """Billed calls of one job, every day and service."""
    with engine.connect() as conn:
        total = conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(billed_calls.c.calls), 0)).where(
                billed_calls.c.job_id == job_id
            )
        ).scalar_one()
    return int(total)


def billed_on(engine: Engine, day: date) -> int:
    """Billed calls of every job on one UTC day (the daily budget's use, as recorded)."""
    with engine.connect() as conn:
        total = conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(billed_calls.c.calls), 0)).where(
                billed_calls.c.day == day
            )
        ).scalar_one()
    return int(total)


def billed_rows(
    engine: Engine, since: date | None = None, job_id: int | None = None
) -> list[BilledRow]:
    """The ledger by day, job and service (oldest day first), from ``since`` on, of one job
    when ``job_id`` is given."""
    query = (
        sa.select(billed_calls.c.day, jobs.c.name, billed_calls.c.service, billed_calls.c.calls)
        .join(jobs, jobs.c.id == billed_calls.c.job_id)
        .order_by(billed_calls.c.day, jobs.c.name, billed_calls.c.service)
    )
    if since is not None:
        query = query.where(billed_calls.c.day >= since)
    if job_id is not None:
        query = query.where(billed_calls.c.job_id == job_id)
    with engine.connect() as conn:
        return [
            BilledRow(day, name, service, int(calls))
            for day, name, service, calls in conn.execute(query)
        ]
