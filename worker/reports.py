"""Reading a job back out: streaming exports (JSON Lines, CSV) and the summary report.

The reads are :mod:`worker.store.queries`' (paged exports in constant memory, aggregate
figures); this module shapes their rows into records, cells and a report, and writes files.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import IO, Any

from sqlalchemy.engine import Engine

from worker.export_services import (
    REFERENCE_FIELDS,
    SERVICE_FIELDS,
    flat_record,
    label_cell,
    reference_records,
)
from worker.prices import Prices
from worker.report_data import service_billing, total_billing
from worker.store.budgets import paused_reasons
from worker.store.jobs import Job
from worker.store.queries import ExportPage, export_pages, job_figures, state_counts
from worker.store.reference_pages import reference_pages
from worker.store.service_figures import ServiceFigures, reference_counts, service_figures

# A one-service line: where the image is, then what the service said of it (the same fields a
# line of several services nests per service under ``results``).
EXPORT_FIELDS = (*REFERENCE_FIELDS, *SERVICE_FIELDS)
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
    """One dict per item of ``job`` that passes ``flt``, in item order, streamed in pages; for
    a job of several services, one per reference with ``results`` per service
    (:mod:`worker.export_services`).

    ``code``/``msg`` are the stored answer's, or the last attempt's for unfinished and failed
    items; ``ext`` is exactly what the API returned; ``error`` is why the item was rejected or
    failed last. ``reused`` is true for a row that took an earlier job's answer (no call was
    made for it): its ``request_id`` and ``moderated_at`` are the original call's.
    ``decision``/``policy``/``policy_version`` are the item's current (latest) decision and the
    policy that made it (``policy`` None for a reviewer's), all None before ``imgmod decide``.
    """
    found: dict[str, Any] = dict(
        states=flt.states,
        risk_levels=flt.risk_levels,
        label=flt.label,
        min_confidence=flt.min_confidence,
        decided=flt.decisions,
        batch=batch,
    )
    if len(job.services) > 1:  # one line per reference, a result per service
        yield from reference_records(
            (row.ref_key, row.service, _row_record(job, page, row))
            for page in reference_pages(engine, job, **found)
            for row in page.rows
        )
        return
    for page in export_pages(engine, job, **found):
        for row in page.rows:
            yield _row_record(job, page, row)


def _row_record(job: Job, page: ExportPage, row: Any) -> dict[str, Any]:
    """One row (one reference under one service) as an export record."""
    has_result = row.result_id is not None
    return {
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


def spreadsheet_safe(cell: str) -> str:
    """``cell`` with a ``'`` in front when a spreadsheet would read it as a formula.

    Object names, referers, dataIds and error texts come from the archive, not from us; a
    reviewer opening the export in Excel or LibreOffice must not run them. The quote shows in a
    text editor (so a program reading the CSV sees ``'=...``); JSONL stays verbatim.
    """
    return "'" + cell if cell.startswith(FORMULA_TRIGGERS) else cell


def write_csv(
    records: Iterable[dict[str, Any]], fh: IO[str], fields: Sequence[str] = EXPORT_FIELDS
) -> int:
    """CSV with a header; ``labels`` as ``label:confidence;...``, ``ext`` as a JSON string; a
    record of several services (``results``) in prefixed columns (``fields``:
    :func:`worker.export_services.csv_fields`). Every text cell goes through
    :func:`spreadsheet_safe`. Open ``fh`` with ``newline=""``. Returns the number of records
    written.
    """
    writer = csv.DictWriter(fh, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    count = 0
    for record in records:
        if "results" in record:
            row = flat_record(record)
        else:
            row = dict(record)
            row["labels"] = label_cell(record["labels"])
            row["ext"] = (
                "" if record["ext"] is None else json.dumps(record["ext"], ensure_ascii=False)
            )
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
class ServiceCost:
    """One service's billed calls at its own price; ``cost`` None when it has no price."""

    service: str
    billable_calls: int
    price_per_1000: Decimal | None
    cost: Decimal | None


@dataclass(frozen=True)
class Report:
    """The figures ``imgmod report`` prints for one job. ``services`` breaks them down per
    service (one entry for a one-service job); ``references`` counts each reference once,
    done when every service's row is; ``cost`` adds the services' costs up when every service
    is priced (``IMGMOD_PRICE_PER_1000``)."""

    job: Job
    by_state: dict[str, int]
    by_risk: dict[str, int]
    top_labels: list[tuple[str, int, float | None]]  # (label, images, highest confidence)
    failures_by_code: dict[str, int]
    billable_calls: int  # stored answers with code 200: the vendor bills exactly those
    reused: int  # rows answered by an earlier job's answer: each one a call saved
    rejected_samples: list[RejectedSample]
    paused: dict[str, int] = field(default_factory=dict)  # reason -> rows waiting on a budget
    services: list[ServiceFigures] = field(default_factory=list)
    references: dict[str, int] = field(default_factory=dict)
    costs: list[ServiceCost] = field(default_factory=list)  # empty without prices
    cost: Decimal | None = None
    currency: str = ""


def _named(counts: list[tuple[str | None, int]]) -> dict[str, int]:
    return {("unknown" if key is None else str(key)): n for key, n in counts}


def build_report(engine: Engine, job: Job, prices: Prices | None = None) -> Report:
    """The job's figures (counted by the database, :func:`worker.store.queries.job_figures`),
    with answers and failures of no risk level or code named ``unknown``, broken down per
    service (:mod:`worker.store.service_figures`), each service's calls at its own price."""
    prices = prices or Prices()
    by_state = state_counts(engine, job.id)
    figures = job_figures(engine, job, top_labels=TOP_LABELS, rejected=REJECTED_SAMPLES)
    services = service_figures(engine, job, top_labels=TOP_LABELS)
    billed = [service_billing(s.service, s.billable_calls, s.reused, prices) for s in services]
    total = total_billing(tuple(billed), figures.billable_calls, figures.reused, prices.currency)
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
        services=services,
        references=reference_counts(engine, job),
        costs=[
            ServiceCost(s.service, b.billed_calls, b.price_per_1000, b.cost)
            for s, b in zip(services, billed, strict=True)
        ]
        if prices
        else [],
        cost=total.cost,
        currency=prices.currency,
    )


def render_report(rep: Report) -> str:
    """The report as ``imgmod report`` prints it: one line per figure, labels as a table; for
    a job of several services, references counted once and a block per service."""
    job = rep.job
    several = len(rep.services) > 1
    asked = f"{len(rep.services)} services" if several else job.service
    lines = [
        f"Job {job.name} ({asked}; {job.total_lines} lines read, "
        f"{job.duplicates} duplicates skipped)"
    ]
    if several:
        lines.append("  references:     " + _fmt_counts(rep.references, sort=False))
    rows = "  rows:           " if several else "  states:         "
    lines.append(rows + _fmt_counts(rep.by_state))
    lines.append("  risk levels:    " + _fmt_counts(rep.by_risk))
    lines.append(f"  billable calls: {rep.billable_calls}")
    if rep.costs:
        lines.append(f"  cost:           {_fmt_cost(rep.cost, rep.currency)}")
    for reason, n in rep.paused.items():  # rows waiting on a budget (imgmod resume)
        lines.append(f"  {n} {reason}")
    if rep.reused:
        lines.append(f"  reused answers: {rep.reused} ({rep.reused} calls saved)")
    if rep.failures_by_code:
        lines.append("  failures by code: " + _fmt_counts(rep.failures_by_code))
    if several:
        costs = {c.service: c for c in rep.costs}
        for part in rep.services:
            lines.extend(_service_lines(part, costs.get(part.service), rep.currency))
    else:
        lines.extend(_label_lines(rep.top_labels, "  "))
    for sample in rep.rejected_samples:
        lines.append(f"  rejected in {sample.source}, {sample.error}")
    return "\n".join(lines)


def _service_lines(part: ServiceFigures, priced: ServiceCost | None, currency: str) -> list[str]:
    lines = [
        f"  service {part.service}:",
        "    rows:           " + _fmt_counts(part.by_state),
        "    risk levels:    " + _fmt_counts(_named(part.by_risk)),
        f"    billable calls: {part.billable_calls}",
    ]
    if priced is not None:
        lines.append(f"    cost:           {_fmt_cost(priced.cost, currency)}")
    if part.reused:
        lines.append(f"    reused answers: {part.reused}")
    if part.failures_by_code:
        lines.append("    failures by code: " + _fmt_counts(_named(part.failures_by_code)))
    return lines + _label_lines(part.top_labels, "    ")


def _label_lines(top: list[tuple[str, int, float | None]], indent: str) -> list[str]:
    if not top:
        return []
    lines = [f"{indent}top labels:{' ' * 31}images  max confidence"]
    for label, count, max_conf in top:
        conf = "-" if max_conf is None else f"{max_conf:.2f}"
        lines.append(f"{indent}  {label:<40} {count:>6}  {conf:>6}")
    return lines


def _fmt_cost(amount: Decimal | None, currency: str) -> str:
    return "unknown: a service has no price" if amount is None else f"{amount:,.2f} {currency}"


def _fmt_counts(counts: dict[str, int], sort: bool = True) -> str:
    pairs = sorted(counts.items()) if sort else counts.items()
    return ", ".join(f"{k} {v}" for k, v in pairs if v) or "-"
