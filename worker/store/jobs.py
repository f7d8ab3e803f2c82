"""Jobs: a named batch of images moderated under one or more services and one infoType.

A job's services and infoType never change once it exists (:func:`get_or_create_job` refuses),
so every item of a job is moderated under one configuration. A job with several services has
one item row per (reference, service) (migration 0009); ``jobs.service`` holds the names comma
separated, in the order asked, and :attr:`Job.services` splits them. :func:`job_key` names a
job across databases, for the Redis keys several deployments may share.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.store.engine import write
from worker.store.schema import OPEN_STATES, items, jobs
from worker.store.sql import insert_for, now


@dataclass(frozen=True)
class Job:
    id: int
    name: str
    service: str
    info_type: str
    referer: str | None
    created_at: datetime
    finished_at: datetime | None
    total_lines: int
    accepted: int
    duplicates: int
    rejected: int
    max_calls: int | None = None  # the most calls the job may bill (worker.budget); None: no cap

    @property
    def services(self) -> tuple[str, ...]:
        """The services asked of every reference, in the order given (the first is the one a
        rejected line is recorded under)."""
        return tuple(self.service.split(","))


def _job(row: sa.Row[Any]) -> Job:
    return Job(**{name: row._mapping[name] for name in Job.__dataclass_fields__})


def job_key(job_id: int, name: str, created_at: datetime) -> str:
    """A job's identity across databases: a recreated database, or another deployment, has a
    job with the same id but another name or creation time (to the microsecond)."""
    text = f"{job_id}\0{name}\0{created_at.astimezone(timezone.utc).isoformat()}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def get_or_create_job(
    engine: Engine,
    name: str,
    service: str | Sequence[str],
    info_type: str,
    referer: str | None = None,
) -> Job:
    """The job called ``name``, created if new. ``service`` is one service or several (each
    reference gets a row per service). Reusing a name with other services or infoType is
    refused: its items would otherwise be moderated under two configurations. ``referer`` is
    the job's default when it is created; an existing job keeps its own."""
    if not name or len(name) > 200:
        raise ValueError(f"a job name has 1 to 200 characters, not {len(name)}")
    service = service if isinstance(service, str) else ",".join(service)
    with write(engine) as conn:
        stmt = insert_for(conn, jobs).values(
            name=name, service=service, info_type=info_type, referer=referer, created_at=now()
        )
        conn.execute(stmt.on_conflict_do_nothing(index_elements=["name"]))
        job = _job(conn.execute(sa.select(jobs).where(jobs.c.name == name)).one())
    differences = [
        f"{what} is {old!r}, not {new!r}"
        for what, old, new in (
            ("service", job.service, service),
            ("info_type", job.info_type, info_type),
        )
        if old != new
    ]
    if differences:
        raise ValueError(
            f"job {name!r} already exists and its {'; its '.join(differences)}; "
            "use another job name or the job's own settings"
        )
    return job


def get_job(engine: Engine, name: str) -> Job | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(jobs).where(jobs.c.name == name)).one_or_none()
    return None if row is None else _job(row)


def list_jobs(engine: Engine) -> list[Job]:
    with engine.connect() as conn:
        return [_job(row) for row in conn.execute(sa.select(jobs).order_by(jobs.c.id))]


def add_counts(
    engine: Engine,
    job_id: int,
    total_lines: int = 0,
    accepted: int = 0,
    duplicates: int = 0,
    rejected: int = 0,
) -> None:
    """Add to the producer counters (increments, so concurrent producers do not lose counts)."""
    with write(engine) as conn:
        conn.execute(
            sa.update(jobs)
            .where(jobs.c.id == job_id)
            .values(
                total_lines=jobs.c.total_lines + total_lines,
                accepted=jobs.c.accepted + accepted,
                duplicates=jobs.c.duplicates + duplicates,
                rejected=jobs.c.rejected + rejected,
            )
        )


def finish_job_if_complete(engine: Engine, job_id: int) -> bool:
    """Stamp ``finished_at`` once no item is pending, queued or running; True when finished."""
    open_items = sa.exists().where(items.c.job_id == job_id, items.c.state.in_(OPEN_STATES))
    with write(engine) as conn:
        conn.execute(
            sa.update(jobs)
            .where(jobs.c.id == job_id, jobs.c.finished_at.is_(None), ~open_items)
            .values(finished_at=now())
        )
        finished = conn.execute(
            sa.select(jobs.c.finished_at).where(jobs.c.id == job_id)
        ).scalar_one_or_none()
    return finished is not None
