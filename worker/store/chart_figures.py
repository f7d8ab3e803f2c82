"""Aggregate reads behind the report's charts (``imgmod report --html``, the review page's
dashboard): confidence histograms per label, decisions per policy version, answers and failures
over time.

Everything is counted by the database (GROUP BY), never by a scan in Python, so a job of
millions of rows costs a few index reads. The shapes are plain tuples; :mod:`worker.report_data`
turns them into the chart figures. Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.store.jobs import Job
from worker.store.schema import decisions, items, result_labels, results

# Confidence is 0-100 (the vendor's Confidence field); ten buckets of ten points, the last one
# closed (100 falls in 90-100). A label without a confidence (``nonLabel``) is bucket None.
CONFIDENCE_BUCKETS = 10


def _confidence_bucket() -> sa.ColumnElement[Any]:
    """0..9 for a confidence, NULL without one; a CASE, because a CAST rounds on PostgreSQL and
    truncates on SQLite."""
    conf = result_labels.c.confidence
    width = 100 / CONFIDENCE_BUCKETS
    whens = [(conf < width * (i + 1), i) for i in range(CONFIDENCE_BUCKETS - 1)]
    return sa.case((conf.is_(None), sa.null()), *whens, else_=CONFIDENCE_BUCKETS - 1)


def label_histograms(
    engine: Engine, job: Job, labels: Sequence[str], service: str | None = None
) -> list[tuple[str, int | None, int]]:
    """(label, bucket, label rows) for the given labels of ``job`` (of ``service``'s answers
    only, when given: a job may ask several services); bucket None is "no confidence".
    Buckets with no rows are absent."""
    if not labels:
        return []
    bucket = _confidence_bucket().label("bucket")
    query = sa.select(result_labels.c.label, bucket, sa.func.count()).where(
        result_labels.c.job_id == job.id, result_labels.c.label.in_(list(labels))
    )
    if service is not None:
        query = query.join(results, results.c.id == result_labels.c.result_id).where(
            results.c.service == service
        )
    with engine.connect() as conn:
        rows = conn.execute(query.group_by(result_labels.c.label, bucket)).all()
    return [(str(label), None if b is None else int(b), int(n)) for label, b, n in rows]


def decision_counts(engine: Engine, job: Job) -> list[tuple[str, str | None, str | None, str, int]]:
    """(source, policy name, policy version, decision, decisions) for every decision stored for
    ``job`` (``decisions`` is append-only: a policy version that ran counts once per row it
    decided; reviews have source ``review``), in first-seen order of the versions."""
    first = sa.func.min(decisions.c.id)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                decisions.c.source,
                decisions.c.policy_name,
                decisions.c.policy_version,
                decisions.c.decision,
                sa.func.count(),
            )
            .where(decisions.c.job_id == job.id)
            .group_by(
                decisions.c.source,
                decisions.c.policy_name,
                decisions.c.policy_version,
                decisions.c.decision,
            )
            .order_by(first)
        ).all()
    return [(str(s), name, version, str(d), int(n)) for s, name, version, d, n in rows]


def _billed_answers() -> sa.Select[Any]:
    """The job's own answers: a reused row's answer carries the original call's time."""
    return sa.select().select_from(results.join(items, items.c.id == results.c.item_id))


def answer_span(engine: Engine, job: Job) -> tuple[datetime | None, datetime | None]:
    """First and last time an answer of ``job``'s own calls, or a failure, was recorded."""
    with engine.connect() as conn:
        first, last = conn.execute(
            _billed_answers()
            .add_columns(sa.func.min(results.c.moderated_at), sa.func.max(results.c.moderated_at))
            .where(results.c.job_id == job.id, items.c.reused_from.is_(None))
        ).one()
        failed_first, failed_last = conn.execute(
            sa.select(sa.func.min(items.c.finished_at), sa.func.max(items.c.finished_at)).where(
                items.c.job_id == job.id, items.c.state == "failed"
            )
        ).one()
    starts = [t for t in (first, failed_first) if t is not None]
    ends = [t for t in (last, failed_last) if t is not None]
    return (min(starts) if starts else None, max(ends) if ends else None)


def _bucket(engine: Engine, column: Any, start: int, width: int) -> sa.ColumnElement[Any]:
    """Which ``width``-second bucket after the epoch second ``start`` a time falls in."""
    if engine.dialect.name == "sqlite":
        # UTCDateTime stores naive UTC text there; strftime('%s') reads it as UTC. Integer
        # division of non-negative integers is a floor.
        seconds = sa.cast(sa.func.strftime("%s", column), sa.Integer)
        return sa.cast((seconds - start) / width, sa.Integer)
    epoch = sa.func.floor(sa.extract("epoch", column))
    return sa.cast(sa.func.floor((epoch - start) / width), sa.Integer)


def answers_over_time(engine: Engine, job: Job, start: int, width: int) -> list[tuple[int, int]]:
    """(bucket, answers) of ``job``'s own calls (reused answers left out), ``width`` seconds a
    bucket from the epoch second ``start``; empty buckets are absent."""
    bucket = _bucket(engine, results.c.moderated_at, start, width).label("bucket")
    with engine.connect() as conn:
        rows = conn.execute(
            _billed_answers()
            .add_columns(bucket, sa.func.count())
            .where(results.c.job_id == job.id, items.c.reused_from.is_(None))
            .group_by(bucket)
            .order_by(bucket)
        ).all()
    return [(int(b), int(n)) for b, n in rows]


def failures_over_time(engine: Engine, job: Job, start: int, width: int) -> list[tuple[int, int]]:
    """(bucket, rows that ended ``failed``) by when they failed, as :func:`answers_over_time`."""
    bucket = _bucket(engine, items.c.finished_at, start, width).label("bucket")
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(bucket, sa.func.count())
            .where(
                items.c.job_id == job.id,
                items.c.state == "failed",
                items.c.finished_at.is_not(None),
            )
            .group_by(bucket)
            .order_by(bucket)
        ).all()
    return [(int(b), int(n)) for b, n in rows]
