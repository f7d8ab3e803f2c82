"""A job's figures per service, and its references counted once (``imgmod report``, the HTML
report, the review page's dashboard).

Why apart from :func:`worker.store.queries.job_figures`: a job asking several services of
every reference has one item row per (reference, service) (migration 0009), each with its own
state and answer, so the job-wide counts mix the services' rows. These reads group the same
figures by ``items.service`` / ``results.service``, and count each reference once in
:func:`reference_counts`. Everything is counted by the database; nothing here writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.store.jobs import Job
from worker.store.schema import STATES, items, result_labels, results

# A reference's state across its services' rows: ``done`` when every row is, ``failed`` when
# every row is finished and one failed, ``rejected`` for a rejected input line (one row), and
# ``open`` while a row is still pending, queued, running or paused.
REFERENCE_STATES = ("done", "failed", "open", "rejected")


@dataclass(frozen=True)
class ServiceFigures:
    """One service's rows and answers in a job; the shapes of
    :class:`~worker.store.queries.JobFigures`, restricted to that service."""

    service: str
    by_state: dict[str, int]  # rows per state, every state listed, in lifecycle order
    by_risk: list[tuple[str | None, int]]  # most frequent first
    top_labels: list[tuple[str, int, float | None]]  # (label, images, highest confidence)
    failures_by_code: list[tuple[str | None, int]]  # most frequent first
    billable_calls: int  # Code-200 answers of this service's own calls (reused ones excluded)
    reused: int  # rows of this service answered by an earlier job's answer


def _grouped(conn: sa.Connection, query: sa.Select[Any]) -> dict[str, list[tuple[Any, int]]]:
    """(service, key, count) rows as {service: [(key, count), ...]}, in the query's order."""
    out: dict[str, list[tuple[Any, int]]] = {}
    for service, key, n in conn.execute(query):
        out.setdefault(str(service), []).append((key, int(n)))
    return out


def _counted(conn: sa.Connection, query: sa.Select[Any]) -> dict[str, int]:
    return {str(service): int(n) for service, n in conn.execute(query)}


def service_figures(engine: Engine, job: Job, *, top_labels: int) -> list[ServiceFigures]:
    """Each of ``job``'s services' figures, in the order the job asks them (a service found
    only in the rows, which the store never writes, comes last). A rejected line is counted
    under the job's first service, where the producer records it."""
    count = sa.func.count()
    with engine.connect() as conn:
        states = _grouped(
            conn,
            sa.select(items.c.service, items.c.state, count)
            .where(items.c.job_id == job.id)
            .group_by(items.c.service, items.c.state),
        )
        risks = _grouped(
            conn,
            sa.select(results.c.service, results.c.risk_level, count)
            .where(results.c.job_id == job.id)
            .group_by(results.c.service, results.c.risk_level)
            .order_by(results.c.service, count.desc(), results.c.risk_level),
        )
        failures = _grouped(
            conn,
            sa.select(items.c.service, items.c.last_code, count)
            .where(items.c.job_id == job.id, items.c.state == "failed")
            .group_by(items.c.service, items.c.last_code)
            .order_by(items.c.service, count.desc(), items.c.last_code),
        )
        # As job_figures: a reused row's copied answer was billed to the job that paid for it.
        billable = _counted(
            conn,
            sa.select(results.c.service, count)
            .select_from(results.join(items, items.c.id == results.c.item_id))
            .where(
                results.c.job_id == job.id,
                results.c.code == "200",
                items.c.reused_from.is_(None),
            )
            .group_by(results.c.service),
        )
        reused = _counted(
            conn,
            sa.select(items.c.service, count)
            .where(items.c.job_id == job.id, items.c.reused_from.is_not(None))
            .group_by(items.c.service),
        )
        found = set(states) | set(risks) | set(billable)
        services = [*job.services, *sorted(found - set(job.services))]
        labels = {s: _top_labels(conn, job, s, top_labels) for s in services}
    figures = []
    for service in services:
        by_state = dict.fromkeys(STATES, 0)
        by_state.update(states.get(service, []))
        figures.append(
            ServiceFigures(
                service=service,
                by_state=by_state,
                by_risk=risks.get(service, []),
                top_labels=labels[service],
                failures_by_code=failures.get(service, []),
                billable_calls=billable.get(service, 0),
                reused=reused.get(service, 0),
            )
        )
    return figures


def _top_labels(
    conn: sa.Connection, job: Job, service: str, limit: int
) -> list[tuple[str, int, float | None]]:
    """The ``limit`` labels of ``service``'s answers carried by the most images (one item row
    per reference and service, so distinct rows are distinct images)."""
    images = sa.func.count(sa.distinct(result_labels.c.item_id))
    rows = conn.execute(
        sa.select(result_labels.c.label, images, sa.func.max(result_labels.c.confidence))
        .select_from(result_labels.join(results, results.c.id == result_labels.c.result_id))
        .where(result_labels.c.job_id == job.id, results.c.service == service)
        .group_by(result_labels.c.label)
        .order_by(images.desc(), result_labels.c.label)
        .limit(limit)
    )
    return [(str(name), int(n), None if top is None else float(top)) for name, n, top in rows]


def reference_counts(engine: Engine, job: Job) -> dict[str, int]:
    """``job``'s references (not rows) per :data:`REFERENCE_STATES`, every state listed: a
    reference is done only when all its services' rows are."""
    state = items.c.state
    rows = sa.func.count()
    per_ref = (
        sa.select(
            rows.label("n"),
            sa.func.sum(sa.case((state == "done", 1), else_=0)).label("done"),
            sa.func.sum(sa.case((state == "failed", 1), else_=0)).label("failed"),
            sa.func.sum(sa.case((state == "rejected", 1), else_=0)).label("rejected"),
        )
        .where(items.c.job_id == job.id)
        .group_by(items.c.ref_key)
        .subquery()
    )
    ref = per_ref.c

    def how_many(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[Any]:
        return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)

    with engine.connect() as conn:
        done, failed, rejected, total = conn.execute(
            sa.select(
                how_many(sa.and_(ref.rejected == 0, ref.done == ref.n)),
                how_many(
                    sa.and_(ref.rejected == 0, ref.done < ref.n, ref.done + ref.failed == ref.n)
                ),
                how_many(ref.rejected > 0),
                sa.func.count(),
            ).select_from(per_ref)
        ).one()
    done, failed, rejected, total = int(done), int(failed), int(rejected), int(total)
    return {
        "done": done,
        "failed": failed,
        "open": total - done - failed - rejected,
        "rejected": rejected,
    }
