"""Reading a job back out: streaming exports (JSON Lines, CSV) and the summary report.

Exports page through a job by item id (keyset pagination, one short read per page), so a job
of millions of images streams in constant memory on SQLite and PostgreSQL alike, and never holds
a transaction open while the caller writes a file.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.store import Job, items, result_labels, results, state_counts

EXPORT_FIELDS = (
    "job",
    "image_url",
    "oss_bucket",
    "oss_object",
    "oss_region",
    "data_id",
    "referer",
    "source",
    "line",
    "status",
    "risk_level",
    "labels",
    "ext",
    "request_id",
    "code",
    "msg",
    "attempts",
    "error",
    "moderated_at",
)
TOP_LABELS = 20
# A spreadsheet runs a cell that starts with one of these as a formula (OWASP "CSV injection"):
# =HYPERLINK(...) in an object name would phone home, =cmd|' /C calc'!A0 runs a program.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
REJECTED_SAMPLES = 10


@dataclass(frozen=True)
class ExportFilter:
    """Which items to export; empty means everything.

    ``label`` / ``min_confidence`` keep items whose result has a matching label (any label
    when only ``min_confidence`` is given); a label without a confidence (``nonLabel``) never
    passes a ``min_confidence``.
    """

    states: tuple[str, ...] = ()
    risk_levels: tuple[str, ...] = ()
    label: str | None = None
    min_confidence: float | None = None


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _filtered(job: Job, flt: ExportFilter) -> sa.Select[Any]:
    joined = items.outerjoin(
        results, sa.and_(results.c.item_id == items.c.id, results.c.service == job.service)
    )
    query = sa.select(
        items.c.id,
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
        results.c.id.label("result_id"),
        results.c.risk_level,
        results.c.ext,
        results.c.request_id,
        results.c.code,
        results.c.msg,
        results.c.moderated_at,
    ).select_from(joined)
    query = query.where(items.c.job_id == job.id)
    if flt.states:
        query = query.where(items.c.state.in_(flt.states))
    if flt.risk_levels:
        query = query.where(results.c.risk_level.in_(flt.risk_levels))
    if flt.label is not None or flt.min_confidence is not None:
        match = [result_labels.c.result_id == results.c.id, result_labels.c.job_id == job.id]
        if flt.label is not None:
            match.append(result_labels.c.label == flt.label)
        if flt.min_confidence is not None:
            match.append(result_labels.c.confidence >= flt.min_confidence)
        query = query.where(sa.exists().where(*match))
    return query


def export_records(
    engine: Engine, job: Job, flt: ExportFilter, batch: int = 1000
) -> Iterator[dict[str, Any]]:
    """One dict per item of ``job`` that passes ``flt``, in item order, streamed in pages.

    ``code``/``msg`` are the stored answer's, or the last attempt's for unfinished and failed
    items; ``ext`` is exactly what the API returned; ``error`` is why the item was rejected or
    failed last.
    """
    query = _filtered(job, flt)
    last = 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                query.where(items.c.id > last).order_by(items.c.id).limit(batch)
            ).all()
            result_ids = [row.result_id for row in rows if row.result_id is not None]
            labels: dict[int, list[dict[str, Any]]] = {}
            if result_ids:
                for label in conn.execute(
                    sa.select(result_labels)
                    .where(result_labels.c.result_id.in_(result_ids))
                    .order_by(result_labels.c.id)
                ):
                    labels.setdefault(label.result_id, []).append(
                        {
                            "label": label.label,
                            "confidence": label.confidence,
                            "description": label.description,
                            "risk_level": label.risk_level,
                        }
                    )
        if not rows:
            return
        for row in rows:
            has_result = row.result_id is not None
            yield {
                "job": job.name,
                "image_url": row.image_url,
                "oss_bucket": row.oss_bucket,
                "oss_object": row.oss_object,
                "oss_region": row.oss_region,
                "data_id": row.data_id,
                "referer": row.referer,
                "source": row.source,
                "line": row.line,
                "status": row.state,
                "risk_level": row.risk_level,
                "labels": labels.get(row.result_id, []) if has_result else [],
                "ext": row.ext,
                "request_id": row.request_id,
                "code": row.code if has_result else row.last_code,
                "msg": row.msg if has_result else row.last_message,
                "attempts": row.attempts,
                "error": row.last_error,
                "moderated_at": _iso(row.moderated_at),
            }
        last = rows[-1].id


def write_jsonl(records: Iterable[dict[str, Any]], fh: IO[str]) -> int:
    """One JSON object per line (UTF-8 text as is); returns the number of records written."""
    count = 0
    for record in records:
        fh.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        count += 1
    return count


def _label_cell(labels: list[dict[str, Any]]) -> str:
    return ";".join(
        label["label"]
        if label["confidence"] is None
        else f"{label['label']}:{label['confidence']:g}"
        for label in labels
    )


def spreadsheet_safe(cell: str) -> str:
    """``cell`` with a ``'`` in front when a spreadsheet would read it as a formula.

    Object names, referers, dataIds and error texts come from the archive, not from us; a
    reviewer opening the export in Excel or LibreOffice must not run them. The quote shows in a
    text editor (so a program reading the CSV sees ``'=...``); JSONL stays verbatim.
    """
    return "'" + cell if cell.startswith(FORMULA_TRIGGERS) else cell


def write_csv(records: Iterable[dict[str, Any]], fh: IO[str]) -> int:
    """CSV with a header; ``labels`` as ``label:confidence;...``, ``ext`` as a JSON string.
    Every text cell goes through :func:`spreadsheet_safe`. Open ``fh`` with ``newline=""``.
    Returns the number of records written.
    """
    writer = csv.DictWriter(fh, fieldnames=EXPORT_FIELDS, extrasaction="ignore")
    writer.writeheader()
    count = 0
    for record in records:
        row = dict(record)
        row["labels"] = _label_cell(record["labels"])
        row["ext"] = "" if record["ext"] is None else json.dumps(record["ext"], ensure_ascii=False)
        writer.writerow(
            {
                k: "" if v is None else spreadsheet_safe(v) if isinstance(v, str) else v
                for k, v in row.items()
            }
        )
        count += 1
    return count


@dataclass(frozen=True)
class RejectedSample:
    source: str
    line: int
    error: str | None


@dataclass(frozen=True)
class Report:
    """The figures ``imgmod report`` prints for one job."""

    job: Job
    by_state: dict[str, int]
    by_risk: dict[str, int]
    top_labels: list[tuple[str, int, float | None]]  # (label, images, highest confidence)
    failures_by_code: dict[str, int]
    billable_calls: int  # stored answers with code 200: the vendor bills exactly those
    rejected_samples: list[RejectedSample]


def build_report(engine: Engine, job: Job) -> Report:
    """Count a job's items, answers and labels with a few aggregate queries (no scan in Python)."""
    by_state = state_counts(engine, job.id)
    with engine.connect() as conn:
        by_risk = {
            ("unknown" if level is None else str(level)): int(n)
            for level, n in conn.execute(
                sa.select(results.c.risk_level, sa.func.count())
                .where(results.c.job_id == job.id, results.c.service == job.service)
                .group_by(results.c.risk_level)
                .order_by(sa.func.count().desc(), results.c.risk_level)
            )
        }
        images = sa.func.count(sa.distinct(result_labels.c.item_id))
        top_labels = [
            (str(label), int(n), None if top is None else float(top))
            for label, n, top in conn.execute(
                sa.select(result_labels.c.label, images, sa.func.max(result_labels.c.confidence))
                .where(result_labels.c.job_id == job.id)
                .group_by(result_labels.c.label)
                .order_by(images.desc(), result_labels.c.label)
                .limit(TOP_LABELS)
            )
        ]
        failures_by_code = {
            ("unknown" if code is None else str(code)): int(n)
            for code, n in conn.execute(
                sa.select(items.c.last_code, sa.func.count())
                .where(items.c.job_id == job.id, items.c.state == "failed")
                .group_by(items.c.last_code)
                .order_by(sa.func.count().desc(), items.c.last_code)
            )
        }
        billable = conn.execute(
            sa.select(sa.func.count())
            .select_from(results)
            .where(results.c.job_id == job.id, results.c.code == "200")
        ).scalar_one()
        samples = [
            RejectedSample(row.source, int(row.line), row.last_error)
            for row in conn.execute(
                sa.select(items.c.source, items.c.line, items.c.last_error)
                .where(items.c.job_id == job.id, items.c.state == "rejected")
                .order_by(items.c.id)
                .limit(REJECTED_SAMPLES)
            )
        ]
    return Report(
        job=job,
        by_state=by_state,
        by_risk=by_risk,
        top_labels=top_labels,
        failures_by_code=failures_by_code,
        billable_calls=int(billable),
        rejected_samples=samples,
    )
