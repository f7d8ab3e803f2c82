"""Rows waiting on a budget: paused by the worker that found it used up, reopened by resume.

A ``paused`` row is closed for following (``imgmod run`` ends, with its own exit code) but
never taken by the publishing window (it takes only ``pending`` rows), so a job over its budget
costs nothing while it waits. Its ``last_code`` is ``budget`` and ``last_message`` the reason
(``paused: daily budget 50,000 reached``), which status, export and report show.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.store.engine import write
from worker.store.schema import items, jobs
from worker.store.sql import now

PAUSED_CODE = "budget"


def pause_item(engine: Engine, item_id: int, owner: str, reason: str) -> bool:
    """``running`` -> ``paused`` with ``reason``, if ``owner`` still holds the row; the claim's
    attempt is given back (no call was made). False when the row is no longer ours."""
    with write(engine) as conn:
        result = conn.execute(
            sa.update(items)
            .where(items.c.id == item_id, items.c.state == "running", items.c.lease_owner == owner)
            .values(
                state="paused",
                attempts=sa.case((items.c.attempts > 0, items.c.attempts - 1), else_=0),
                last_code=PAUSED_CODE,
                last_message=reason[:500],
                lease_owner=None,
                lease_expires_at=None,
                updated_at=now(),
            )
        )
    return result.rowcount == 1


def unpause_job(engine: Engine, job_id: int) -> int:
    """The job's ``paused`` rows back to ``pending`` (the window publishes them), and the job
    open again; returns how many were reopened."""
    moment = now()
    with write(engine) as conn:
        count = conn.execute(
            sa.update(items)
            .where(items.c.job_id == job_id, items.c.state == "paused")
            .values(state="pending", last_code=None, last_message=None, updated_at=moment)
        ).rowcount
        if count:
            conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(finished_at=None))
    return int(count)


def set_max_calls(engine: Engine, job_id: int, max_calls: int | None) -> None:
    """The most calls the job may bill from now on (None: no cap)."""
    with write(engine) as conn:
        conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(max_calls=max_calls))


def paused_reasons(engine: Engine, job_id: int) -> dict[str, int]:
    """Why the job's paused rows wait: reason -> rows."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(items.c.last_message, sa.func.count())
            .where(items.c.job_id == job_id, items.c.state == "paused")
            .group_by(items.c.last_message)
        ).all()
    return {str(reason): int(n) for reason, n in rows}
