"""Browse and search across jobs: items by job, state, current decision, label, confidence range,
RiskLevel and answer date, one keyset page at a time (the review page's Browse and its export).

Every filter is a SQL condition the indexes of migration 0008 serve; the current decision is the
item's latest ``decisions`` row. Pages go by item id (``after``), so page 1,000 costs what page 1
does and a link holding the filters and ``after`` always shows the same rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.store.schema import decisions, items, jobs, result_labels, results


@dataclass(frozen=True)
class BrowseFilter:
    """What to show; None / empty means no condition. Dates bound the answer's time."""

    job_id: int | None = None
    states: tuple[str, ...] = ()
    decisions: tuple[str, ...] = ()
    label: str | None = None
    min_confidence: float | None = None
    max_confidence: float | None = None
    risk_levels: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class BrowseRow:
    """One item as Browse shows it and the export writes it."""

    item_id: int
    job_id: int
    job: str
    kind: str
    image_url: str | None
    oss_bucket: str | None
    oss_object: str | None
    oss_region: str | None
    data_id: str | None
    source: str
    line: int
    state: str
    risk_level: str | None
    ext: Any
    request_id: str | None
    moderated_at: datetime | None
    decision: str | None
    priority: int | None
    labels: tuple[tuple[str, float | None], ...]


def _latest_decision() -> sa.ScalarSelect[Any]:
    return (
        sa.select(decisions.c.decision)
        .where(decisions.c.item_id == items.c.id)
        .order_by(decisions.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def _latest_priority() -> sa.ScalarSelect[Any]:
    return (
        sa.select(decisions.c.priority)
        .where(decisions.c.item_id == items.c.id)
        .order_by(decisions.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def _query(flt: BrowseFilter) -> sa.Select[Any]:
    decision = _latest_decision().label("decision")
    query = sa.select(
        items.c.id,
        items.c.job_id,
        jobs.c.name.label("job"),
        items.c.kind,
        items.c.image_url,
        items.c.oss_bucket,
        items.c.oss_object,
        items.c.oss_region,
        items.c.data_id,
        items.c.source,
        items.c.line,
        items.c.state,
        results.c.id.label("result_id"),
        results.c.risk_level,
        results.c.ext,
        results.c.request_id,
        results.c.moderated_at,
        decision,
        _latest_priority().label("priority"),
    ).select_from(
        items.join(jobs, jobs.c.id == items.c.job_id).outerjoin(
            # the job too: a job's filter then reaches results' (job_id, ...) indexes
            results,
            sa.and_(results.c.item_id == items.c.id, results.c.job_id == items.c.job_id),
        )
    )
    if flt.job_id is not None:
        query = query.where(items.c.job_id == flt.job_id)
        if flt.risk_levels or flt.since is not None or flt.until is not None:
            # these need an answer anyway; naming its job lets results' indexes lead
            query = query.where(results.c.job_id == flt.job_id)
    if flt.states:
        query = query.where(items.c.state.in_(flt.states))
    if flt.decisions:
        query = query.where(_latest_decision().in_(flt.decisions))
    if flt.risk_levels:
        query = query.where(results.c.risk_level.in_(flt.risk_levels))
    if flt.since is not None:
        query = query.where(results.c.moderated_at >= flt.since)
    if flt.until is not None:
        query = query.where(results.c.moderated_at < flt.until)
    if flt.label is not None or flt.min_confidence is not None or flt.max_confidence is not None:
        match: list[sa.ColumnElement[bool]] = [result_labels.c.result_id == results.c.id]
        if flt.label is not None:
            match.append(result_labels.c.label == flt.label)
        if flt.min_confidence is not None:
            match.append(result_labels.c.confidence >= flt.min_confidence)
        if flt.max_confidence is not None:
            match.append(result_labels.c.confidence <= flt.max_confidence)
        query = query.where(sa.exists().where(*match))
    return query


def browse_page(
    engine: Engine, flt: BrowseFilter, *, after: int = 0, limit: int = 50
) -> list[BrowseRow]:
    """Up to ``limit`` items passing ``flt`` with id > ``after``, in id order, with labels."""
    with engine.connect() as conn:
        # Within one job, (job_id, id) order is id order, and names the index to walk
        # (ix items(job_id, id)) instead of the whole table's primary key.
        order = (items.c.job_id, items.c.id) if flt.job_id is not None else (items.c.id,)
        rows = conn.execute(
            _query(flt).where(items.c.id > after).order_by(*order).limit(limit)
        ).all()
        result_ids = [row.result_id for row in rows if row.result_id is not None]
        labels: dict[int, list[tuple[str, float | None]]] = {}
        if result_ids:
            for found in conn.execute(
                sa.select(
                    result_labels.c.result_id, result_labels.c.label, result_labels.c.confidence
                )
                .where(result_labels.c.result_id.in_(result_ids))
                .order_by(result_labels.c.id)
            ):
                labels.setdefault(found.result_id, []).append((found.label, found.confidence))
    return [
        BrowseRow(
            item_id=int(row.id),
            job_id=int(row.job_id),
            job=row.job,
            kind=row.kind,
            image_url=row.image_url,
            oss_bucket=row.oss_bucket,
            oss_object=row.oss_object,
            oss_region=row.oss_region,
            data_id=row.data_id,
            source=row.source,
            line=int(row.line),
            state=row.state,
            risk_level=row.risk_level,
            ext=row.ext,
            request_id=row.request_id,
            moderated_at=row.moderated_at,
            decision=row.decision,
            priority=row.priority,
            labels=tuple(labels.get(row.result_id, ())),
        )
        for row in rows
    ]


def browse_all(engine: Engine, flt: BrowseFilter, batch: int = 1000) -> Iterator[BrowseRow]:
    """Every item passing ``flt``, streamed page by page (the export of the current view)."""
    after = 0
    while True:
        page = browse_page(engine, flt, after=after, limit=batch)
        if not page:
            return
        yield from page
        after = page[-1].item_id


def job_ids(engine: Engine, names: Sequence[str]) -> dict[str, int]:
    """Job name -> id for the names that exist."""
    with engine.connect() as conn:
        found = conn.execute(sa.select(jobs.c.name, jobs.c.id).where(jobs.c.name.in_(list(names))))
        return {str(name): int(job_id) for name, job_id in found}
