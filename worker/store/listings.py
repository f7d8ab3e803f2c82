"""Listings: where the listing of one OSS prefix into one job stands, so it can resume.

The producer records a page's objects first and then saves the page's continuation token
(:func:`save_listing`): a listing killed between the two lists that page again, and the
``(job_id, ref_key)`` uniqueness of items drops the objects it already recorded. So a resumed
listing has no gap (the token saved never runs ahead of the rows) and no duplicate.

``source`` is the prefix plus a fingerprint of the filters: the same prefix listed into the same
job under other filters is another listing, with its own progress.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.store.engine import write
from worker.store.schema import listings
from worker.store.sql import insert_for, now


@dataclass(frozen=True)
class Listing:
    """One listing's progress: ``token`` is where the next page starts (None: the start),
    ``listed`` how many objects the pages before it held, ``done`` whether the last page was
    recorded."""

    id: int
    job_id: int
    source: str
    token: str | None
    listed: int
    done: bool


def open_listing(engine: Engine, job_id: int, source: str) -> Listing:
    """The listing of ``source`` into the job, created at the start if new. A listing that was
    done starts over (a second run of the same job picks up objects added since; the objects
    already recorded are skipped by their key)."""
    with write(engine) as conn:
        stmt = insert_for(conn, listings).values(
            job_id=job_id, source=source, listed=0, done=False, updated_at=now()
        )
        conn.execute(stmt.on_conflict_do_nothing(index_elements=["job_id", "source"]))
        where = sa.and_(listings.c.job_id == job_id, listings.c.source == source)
        conn.execute(
            sa.update(listings)
            .where(where, listings.c.done.is_(True))
            .values(continuation_token=None, listed=0, done=False, updated_at=now())
        )
        row = conn.execute(sa.select(listings).where(where)).one()
    return Listing(
        int(row.id), job_id, source, row.continuation_token, int(row.listed), bool(row.done)
    )


def save_listing(engine: Engine, listing_id: int, token: str | None, listed: int) -> None:
    """Record that the pages up to ``token`` are stored (``token`` None: the last page was)."""
    with write(engine) as conn:
        conn.execute(
            sa.update(listings)
            .where(listings.c.id == listing_id)
            .values(continuation_token=token, listed=listed, done=token is None, updated_at=now())
        )


def get_listing(engine: Engine, job_id: int, source: str) -> Listing | None:
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(listings).where(listings.c.job_id == job_id, listings.c.source == source)
        ).one_or_none()
    if row is None:
        return None
    return Listing(
        int(row.id), job_id, source, row.continuation_token, int(row.listed), bool(row.done)
    )
