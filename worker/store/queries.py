"""Reads for people: counts, exports and report figures (``imgmod status``, ``export``, ``report``,
the metrics endpoint, ``imgmod run``'s progress).

Nothing here writes. Exports page through a job by item id (keyset pagination, one short read
per page), so a job of millions of images streams in constant memory on SQLite and PostgreSQL
alike, and never holds a transaction open while the caller writes a file. Figures are counted
by a few aggregate queries, never by a scan in Python. Shaping the rows is
:mod:`worker.reports`'s job.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.store.jobs import Job
from worker.store.schema import STATES, decisions, items, result_labels, results


def state_counts(engine: Engine, job_id: int) -> dict[str, int]:
    """Items per state, every state listed (zero when absent), in lifecycle order."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(items.c.state, sa.func.count())
            .where(items.c.job_id == job_id)
            .group_by(items.c.state)
        ).all()
    counts = dict.fromkeys(STATES, 0)
    counts.update({state: int(n) for state, n in rows})
    return counts


def service_state_counts(engine: Engine, job_id: int) -> dict[str, dict[str, int]]:
    """Rows per state for each service of a job (a job of several services has a row per
    reference and service), every state listed, services in name order."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(items.c.service, items.c.state, sa.func.count())
            .where(items.c.job_id == job_id)
            .group_by(items.c.service, items.c.state)
        ).all()
    counts: dict[str, dict[str, int]] = {}
    for service, state, n in sorted(rows, key=lambda row: str(row[0])):
        counts.setdefault(str(service), dict.fromkeys(STATES, 0))[str(state)] = int(n)
    return counts


def attempts_made(engine: Engine, job_id: int) -> int:
    """Claims made on a job's rows so far: grows with every attempt, retries included, so a
    job whose retries only wait their backoff is told apart from one whose messages are lost."""
    with engine.connect() as conn:
        total = conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(items.c.attempts), 0)).where(
                items.c.job_id == job_id
            )
        ).scalar_one()
    return int(total)


# --------------------------------------------------------------------------- exports


@dataclass(frozen=True)
class ExportPage:
    """One page of a job's items joined to their stored answers (``result_id`` None when the
    item has none), and the labels of those answers by result id, in stored order."""

    rows: Sequence[sa.Row[Any]]
    labels: Mapping[int, list[dict[str, Any]]]


def filtered_rows(
    job: Job,
    states: Sequence[str],
    risk_levels: Sequence[str],
    label: str | None,
    min_confidence: float | None,
    decided: Sequence[str] = (),
) -> sa.Select[Any]:
    joined = items.outerjoin(
        results, sa.and_(results.c.item_id == items.c.id, results.c.service == items.c.service)
    )
    # The item's current decision: its latest row in the append-only decisions table.
    latest = (
        sa.select(sa.func.max(decisions.c.id))
        .where(decisions.c.item_id == items.c.id)
        .correlate(items)
        .scalar_subquery()
    )
    joined = joined.outerjoin(decisions, decisions.c.id == latest)
    query = sa.select(
        items.c.id,
        items.c.ref_key,
        items.c.service,
        items.c.image_url,
        items.c.oss_bucket,
        items.c.oss_object,
        items.c.oss_region,
        items.c.data_id,
        items.c.referer,
        items.c.source,
        items.c.line,
        items.c.state,
        items.c.attempts,
        items.c.last_code,
        items.c.last_message,
        items.c.last_error,
        items.c.reused_from,
        results.c.id.label("result_id"),
        results.c.risk_level,
        results.c.ext,
        results.c.request_id,
        results.c.code,
        results.c.msg,
        results.c.moderated_at,
        decisions.c.decision,
        decisions.c.policy_name,
        decisions.c.policy_version,
    ).select_from(joined)
    query = query.where(items.c.job_id == job.id)
    if states:
        query = query.where(items.c.state.in_(states))
    if risk_levels:
        query = query.where(results.c.risk_level.in_(risk_levels))
    if decided:
        query = query.where(decisions.c.decision.in_(decided))
    if label is not None or min_confidence is not None:
        match = [result_labels.c.result_id == results.c.id, result_labels.c.job_id == job.id]
        if label is not None:
            match.append(result_labels.c.label == label)
        if min_confidence is not None:
            match.append(result_labels.c.confidence >= min_confidence)
        query = query.where(sa.exists().where(*match))
    return query


def labels_of(conn: Connection, result_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    """The labels of the answers ``result_ids`` (one page's), by result id, in stored order."""
    labels: dict[int, list[dict[str, Any]]] = {}
    if not result_ids:
        return labels
    for found in conn.execute(
        sa.select(result_labels)
        .where(result_labels.c.result_id.in_(result_ids))
        .order_by(result_labels.c.id)
    ):
        labels.setdefault(found.result_id, []).append(
            {
                "label": found.label,
                "confidence": found.confidence,
                "description": found.description,
                "risk_level": found.risk_level,
            }
        )
    return labels


def export_pages(
    engine: Engine,
    job: Job,
    *,
    states: Sequence[str] = (),
    risk_levels: Sequence[str] = (),
    label: str | None = None,
    min_confidence: float | None = None,
    decided: Sequence[str] = (),
    batch: int = 1000,
) -> Iterator[ExportPage]:
    """The job's items in id order, ``batch`` per page, one short read per page.

    Empty filters mean everything. ``label`` / ``min_confidence`` keep items whose answer has
    a matching label (any label when only ``min_confidence`` is given); a label without a
    confidence (``nonLabel``) never passes a ``min_confidence``. ``decided`` keeps items whose
    current (latest) decision is one of those given.
    """
    query = filtered_rows(job, states, risk_levels, label, min_confidence, decided)
    last = 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                query.where(items.c.id > last).order_by(items.c.id).limit(batch)
            ).all()
            labels = labels_of(conn, [row.result_id for row in rows if row.result_id is not None])
        if not rows:
            return
        yield ExportPage(rows, labels)
        last = rows[-1].id


# --------------------------------------------------------------------------- report figures


@dataclass(frozen=True)
class JobFigures:
    """A job's answers and failures, counted by the database; None where it stored none."""

    by_risk: list[tuple[str | None, int]]  # most frequent first
    top_labels: list[tuple[str, int, float | None]]  # (label, images, highest confidence)
    failures_by_code: list[tuple[str | None, int]]  # most frequent first
    billable_calls: int  # stored answers with code 200: the vendor bills exactly those
    reused: int  # rows that took an earlier job's answer (worker.store.reuse): calls saved
    rejected: list[tuple[str, int, str | None]]  # (source, line, why), first ones first


def job_figures(engine: Engine, job: Job, *, top_labels: int, rejected: int) -> JobFigures:
    """Count a job's answers, labels and failures (the ``top_labels`` most frequent labels, the
    first ``rejected`` rejected lines) with a few aggregate queries on one connection."""
    with engine.connect() as conn:
        by_risk = [
            (level, int(n))
            for level, n in conn.execute(
                sa.select(results.c.risk_level, sa.func.count())
                .where(results.c.job_id == job.id)
                .group_by(results.c.risk_level)
                .order_by(sa.func.count().desc(), results.c.risk_level)
            )
        ]
        images = sa.func.count(sa.distinct(result_labels.c.item_id))
        labels = [
            (str(name), int(n), None if top is None else float(top))
            for name, n, top in conn.execute(
                sa.select(result_labels.c.label, images, sa.func.max(result_labels.c.confidence))
                .where(result_labels.c.job_id == job.id)
                .group_by(result_labels.c.label)
                .order_by(images.desc(), result_labels.c.label)
                .limit(top_labels)
            )
        ]
        failures = [
            (code, int(n))
            for code, n in conn.execute(
                sa.select(items.c.last_code, sa.func.count())
                .where(items.c.job_id == job.id, items.c.state == "failed")
                .group_by(items.c.last_code)
                .order_by(sa.func.count().desc(), items.c.last_code)
            )
        ]
        # A reused row's copied answer was billed to the job that paid for it, not to this one.
        billable = conn.execute(
            sa.select(sa.func.count())
            .select_from(results.join(items, items.c.id == results.c.item_id))
            .where(
                results.c.job_id == job.id,
                results.c.code == "200",
                items.c.reused_from.is_(None),
            )
        ).scalar_one()
        reused = conn.execute(
            sa.select(sa.func.count()).where(
                items.c.job_id == job.id, items.c.reused_from.is_not(None)
            )
        ).scalar_one()
        samples = [
            (row.source, int(row.line), row.last_error)
            for row in conn.execute(
                sa.select(items.c.source, items.c.line, items.c.last_error)
                .where(items.c.job_id == job.id, items.c.state == "rejected")
                .order_by(items.c.id)
                .limit(rejected)
            )
        ]
    return JobFigures(
        by_risk=by_risk,
        top_labels=labels,
        failures_by_code=failures,
        billable_calls=int(billable),
        reused=int(reused),
        rejected=samples,
    )
