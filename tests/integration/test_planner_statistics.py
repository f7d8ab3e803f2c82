"""PostgreSQL's planner statistics after an enqueue (worker.store.refresh_planner_statistics).

A table never analyzed is planned as holding a row or two, and the window's take of pending
rows (``store.take_pending``) then compares every picked id with every pending row: seconds
for a few thousand rows on a new database. The enqueue analyzes the table when the planner's
row count is under half of what it has just inserted; these tests hold it to that, on the
real server, and hold SQLite's side to doing nothing."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from worker import producer, store
from worker.params import ImageRef
from worker.sources import Accepted

pytestmark = pytest.mark.service

SERVICE = "baselineCheck_global"


def believed_rows(engine: sa.Engine) -> float:
    """What PostgreSQL's planner takes the size of ``items`` to be (-1: never counted)."""
    with engine.connect() as conn:
        return float(
            conn.execute(
                sa.text("SELECT reltuples FROM pg_class WHERE oid = CAST('items' AS regclass)")
            ).scalar_one()
        )


def urls(first: int, count: int) -> list[Accepted]:
    return [
        Accepted(ImageRef(image_url=f"https://example.com/{n}.jpg"), "in.txt", n)
        for n in range(first, first + count)
    ]


def test_an_enqueue_into_a_new_table_leaves_it_analyzed(engine: sa.Engine) -> None:
    job = store.get_or_create_job(engine, "fresh", SERVICE, "")
    summary = producer.enqueue_records(
        engine, job, urls(0, 3000), lambda: 0, batch_size=1000, first_batch=1000
    )
    assert summary.accepted == 3000
    if engine.dialect.name == "sqlite":
        return  # nothing to look at: refresh_planner_statistics is a no-op there
    assert believed_rows(engine) == 3000  # a small table: ANALYZE reads every row


def test_analyzes_only_when_the_planner_believes_under_half(engine: sa.Engine) -> None:
    job = store.get_or_create_job(engine, "halves", SERVICE, "")
    one_batch = {"first_batch": producer.BATCH_SIZE}  # each call below inserts in one batch
    producer.enqueue_records(engine, job, urls(0, 1000), lambda: 0, **one_batch)
    postgres = engine.dialect.name == "postgresql"
    # 1,000 believed: 1,999 rows known is under double, 2,001 is over.
    assert store.refresh_planner_statistics(engine, 1999) is False
    producer.enqueue_records(engine, job, urls(1000, 1500), lambda: 0, **one_batch)
    if postgres:
        assert believed_rows(engine) == 1000  # 1,500 inserted by a call that knew only those
    assert store.refresh_planner_statistics(engine, 2001) is postgres
    if postgres:
        assert believed_rows(engine) == 2500
    assert store.refresh_planner_statistics(engine, 2500) is False
    assert store.refresh_planner_statistics(engine, 0) is False
