"""A job of several services, read back one reference at a time (``imgmod export``).

Such a job has a row per (reference, service) (migration 0009), inserted a batch per service,
so one reference's rows are far apart in id order. A reference is paged by its first
service's row (every reference has one: a rejected line too, recorded under the first service),
in id order, so an export keeps the input's order and streams in constant memory like a
one-service export (:func:`worker.store.queries.export_pages`). Each page then reads every row of
its references, all services, with their answers and current decisions: by the unique
(job_id, ref_key, service) index, one short read per page.

Filters keep a reference when **any** of its services' rows passes them (a reference flagged
by the AIGC detector alone is exported under ``--risk high``); the line then shows all its
services, so the reader sees what each one said.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.store.jobs import Job
from worker.store.queries import ExportPage, filtered_rows, labels_of
from worker.store.schema import items


def reference_pages(
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
    """The job's references ``batch`` at a time, in the order of their first service's row;
    each page's rows are every row of its references that pass (any service passing keeps
    the reference and all its rows), ordered by that first row, then by the job's service
    order. The filters mean what they mean in :func:`~worker.store.queries.export_pages`."""
    first = job.services[0]
    order = {service: n for n, service in enumerate(job.services)}
    filtering = bool(states or risk_levels or decided or label is not None) or (
        min_confidence is not None
    )
    everything = filtered_rows(job, (), (), None, None)
    passing = filtered_rows(job, states, risk_levels, label, min_confidence, decided)
    last = 0
    while True:
        with engine.connect() as conn:
            heads = conn.execute(
                sa.select(items.c.id, items.c.ref_key)
                .where(items.c.job_id == job.id, items.c.service == first, items.c.id > last)
                .order_by(items.c.id)
                .limit(batch)
            ).all()
            if not heads:
                return
            keys = [str(head.ref_key) for head in heads]
            if filtering:
                kept = {
                    str(r.ref_key) for r in conn.execute(passing.where(items.c.ref_key.in_(keys)))
                }
                keys = [key for key in keys if key in kept]
            rows = list(conn.execute(everything.where(items.c.ref_key.in_(keys)))) if keys else []
            labels = labels_of(conn, [row.result_id for row in rows if row.result_id is not None])
        place = {key: n for n, key in enumerate(keys)}
        rows.sort(key=lambda row: (place[str(row.ref_key)], order.get(str(row.service), 99)))
        if rows:
            yield ExportPage(rows, labels)
        last = int(heads[-1].id)
