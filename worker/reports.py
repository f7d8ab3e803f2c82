"""Reading a job back out: streaming exports (JSON Lines, CSV) and the summary report.

The reads are :mod:`worker.store.queries`' (paged exports in constant memory, aggregate
figures); this module shapes their rows into records, cells and a report, and writes files.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import IO, Any

from sqlalchemy.engine import Engine

from worker.store.budgets import paused_reasons
from worker.store.jobs import Job
from worker.store.queries import export_pages, job_figures, state_counts

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
    "reused",
    "decision",
    "policy",
    "policy_version",
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
    decisions: tuple[str, ...] = ()  # the item's current decision is one of these


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def export_records(
    engine: Engine, job: Job, flt: ExportFilter, batch: int = 1000
) -> Iterator[dict[str, Any]]:
    """One dict per item of ``job`` that passes ``flt``, in item order, streamed in pages.

    ``code``/``msg`` are the stored answer's, or the last attempt's for unfinished and failed
    items; ``ext`` is exactly what the API returned; ``error`` is why the item was rejected or
    failed last. ``reused`` is true for a row that took an earlier job's answer (no call was
    made for it): its ``request_id`` and ``moderated_at`` are the original call's.
    ``decision``/``policy``/``policy_version`` are the item's current (latest) decision and the
    policy that made it (``policy`` None for a reviewer's), all None before ``imgmod decide``.
    """
    pages = export_pages(
        engine,
        job,
        states=flt.states,
        risk_levels=flt.risk_levels,
        label=flt.label,
        min_confidence=flt.min_confidence,
        decided=flt.decisions,
        batch=batch,
    )
    for page in pages:
        for row in page.rows:
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
                "labels": page.labels.get(row.result_id, []) if has_result else [],
                "ext": row.ext,
                "request_id": row.request_id,
                "code": row.code if has_result else row.last_code,
                "msg": row.msg if has_result else row.last_message,
                "attempts": row.attempts,
                "error": row.last_error,
                "moderated_at": _iso(row.moderated_at),
                "reused": row.reused_from is not None,
                "decision": row.decision,
                "policy": row.policy_name,
                "policy_version": row.policy_version,
            }


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
    reused: int  # rows answered by an earlier job's answer: each one a call saved
    rejected_samples: list[RejectedSample]
    paused: dict[str, int] = field(default_factory=dict)  # reason -> rows waiting on a budget


def _named(counts: list[tuple[str | None, int]]) -> dict[str, int]:
    return {("unknown" if key is None else str(key)): n for key, n in counts}


def build_report(engine: Engine, job: Job) -> Report:
    """The job's figures (counted by the database, :func:`worker.store.queries.job_figures`),
    with answers and failures of no risk level or code named ``unknown``."""
    by_state = state_counts(engine, job.id)
    figures = job_figures(engine, job, top_labels=TOP_LABELS, rejected=REJECTED_SAMPLES)
    return Report(
        job=job,
        by_state=by_state,
        by_risk=_named(figures.by_risk),
        top_labels=figures.top_labels,
        failures_by_code=_named(figures.failures_by_code),
        billable_calls=figures.billable_calls,
        reused=figures.reused,
        rejected_samples=[RejectedSample(*sample) for sample in figures.rejected],
        paused=paused_reasons(engine, job.id) if by_state.get("paused") else {},
    )


def render_report(rep: Report) -> str:
    """The report as ``imgmod report`` prints it: one line per figure, labels as a table."""
    job = rep.job
    lines = [
        f"Job {job.name} ({job.service}; {job.total_lines} lines read, "
        f"{job.duplicates} duplicates skipped)"
    ]
    lines.append("  states:         " + _fmt_counts(rep.by_state))
    lines.append("  risk levels:    " + _fmt_counts(rep.by_risk))
    lines.append(f"  billable calls: {rep.billable_calls}")
    for reason, n in rep.paused.items():  # rows waiting on a budget (imgmod resume)
        lines.append(f"  {n} {reason}")
    if rep.reused:
        lines.append(f"  reused answers: {rep.reused} ({rep.reused} calls saved)")
    if rep.failures_by_code:
        lines.append("  failures by code: " + _fmt_counts(rep.failures_by_code))
    if rep.top_labels:
        lines.append("  top labels:                               images  max confidence")
        for label, count, max_conf in rep.top_labels:
            conf = "-" if max_conf is None else f"{max_conf:.2f}"
            lines.append(f"    {label:<40} {count:>6}  {conf:>6}")
    for sample in rep.rejected_samples:
        lines.append(f"  rejected in {sample.source}, {sample.error}")
    return "\n".join(lines)


def _fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v) or "-"
