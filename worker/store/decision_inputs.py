"""What a policy run reads: a job's items with their stored answers and current decisions.

:func:`decision_inputs` pages a job in item order (keyset pages, one short read each), joined to
the stored answers, with each item's current decision in brief (:class:`CurrentDecision`), so
``imgmod decide`` never holds a whole job in memory and never reads more than its policy looks
at. :func:`policy_hashes` tells whether a policy version was applied with other rules.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.store.schema import decisions, items, result_labels, results


@dataclass(frozen=True, slots=True)
class CurrentDecision:
    """What a policy run compares against: the item's current decision, in brief."""

    decision: str
    rule: str | None
    priority: int | None
    policy_hash: str | None
    source: str


def _brief(conn: Connection, job_id: int, first: int, last: int) -> dict[int, CurrentDecision]:
    """The current decision of each item of ``job_id`` with an id in ``first..last`` (one keyset
    page), only the columns a policy run compares (no times to convert, no objects of thirteen
    fields: a run reads one per item).

    A range on ``ix_decisions_job_id_item_id`` rather than a list of ids: a planner without
    statistics (a table just filled by the previous page's run) still walks the index instead
    of scanning the whole table once per page.
    """
    newer = decisions.alias("newer")
    latest = (
        sa.select(sa.func.max(newer.c.id))
        .where(newer.c.item_id == decisions.c.item_id)
        .correlate(decisions)
        .scalar_subquery()
    )
    query = sa.select(
        decisions.c.item_id,
        decisions.c.decision,
        decisions.c.rule,
        decisions.c.priority,
        decisions.c.policy_hash,
        decisions.c.source,
    ).where(
        decisions.c.job_id == job_id,
        decisions.c.item_id.between(first, last),
        decisions.c.id == latest,
    )
    return {int(item_id): CurrentDecision(*rest) for item_id, *rest in conn.execute(query)}


@dataclass(frozen=True)
class DecisionInput:
    """What a policy needs of one item: its state, its stored answer's code, RiskLevel, labels
    and Ext (empty when not asked for, or no answer), and its current decision."""

    item_id: int
    state: str
    code: str | None  # the stored answer's Code; None without one
    risk_level: str | None
    labels: tuple[tuple[str, float | None], ...]
    ext: dict[str, Any] | None
    current: CurrentDecision | None
    last_code: str | None = None  # the item's last failure code (a failed row's reason)


def decision_inputs(
    engine: Engine,
    job_id: int,
    *,
    labels: bool = True,
    ext: bool = True,
    batch: int = 2000,
) -> Iterator[list[DecisionInput]]:
    """A job's items with their answers, ``batch`` per page in item order (keyset pages, one
    short read each: constant memory however large the job); each row with the answer of its
    own service (a job of several services has a row per reference and service, each decided
    on its own). ``labels``/``ext`` False skip reading what the policy does not look at."""
    columns = [items.c.id, items.c.state, items.c.last_code, results.c.id.label("result_id")]
    columns.append(results.c.code)
    columns.append(results.c.risk_level)
    if ext:
        columns.append(results.c.ext)
    joined = items.outerjoin(
        results, sa.and_(results.c.item_id == items.c.id, results.c.service == items.c.service)
    )
    query = sa.select(*columns).select_from(joined).where(items.c.job_id == job_id)
    last = 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                query.where(items.c.id > last).order_by(items.c.id).limit(batch)
            ).all()
            if not rows:
                return
            found: dict[int, list[tuple[str, float | None]]] = {}
            result_ids = [row.result_id for row in rows if row.result_id is not None]
            if labels and result_ids:
                for result_id, label, confidence in conn.execute(
                    sa.select(
                        result_labels.c.result_id, result_labels.c.label, result_labels.c.confidence
                    )
                    .where(result_labels.c.result_id.in_(result_ids))
                    .order_by(result_labels.c.id)
                ):
                    found.setdefault(result_id, []).append((label, confidence))
            current = _brief(conn, job_id, rows[0].id, rows[-1].id)
        yield [
            DecisionInput(
                item_id=row.id,
                state=row.state,
                code=row.code,
                risk_level=row.risk_level,
                labels=tuple(found.get(row.result_id, ())),
                ext=row.ext if ext else None,
                current=current.get(row.id),
                last_code=row.last_code,
            )
            for row in rows
        ]
        last = rows[-1].id


def policy_hashes(engine: Engine, job_id: int, name: str, version: str) -> set[str]:
    """The content hashes of the policy ``name`` ``version`` already applied to a job: more
    than one file calling itself the same version would make "which rules decided" ambiguous."""
    query = (
        sa.select(decisions.c.policy_hash)
        .where(
            decisions.c.job_id == job_id,
            decisions.c.policy_name == name,
            decisions.c.policy_version == version,
        )
        .distinct()
    )
    with engine.connect() as conn:
        return {str(found) for found in conn.execute(query).scalars() if found is not None}
