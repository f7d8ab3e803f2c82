"""Export records of a job of several services: one line per reference, a result per service.

A job asking ``baselineCheck_global,aigcDetector_global`` has a row per (reference, service);
a reader wants one line per image. The line keeps the reference's own fields (where the image
is, where it was read), a ``status`` for the reference as a whole (done when every service's
row is), the highest ``risk_level`` and the most severe current ``decision`` any service gave,
and ``results``: per service, what a one-service export says of a row (status, RiskLevel,
labels, Ext, RequestId, code, message, attempts, error, time, reuse, decision, policy).

CSV has no nesting: the per-service fields become prefixed columns
(``aigcDetector_global.risk_level``), in the job's service order. Shaping only, pure; the reads
are :mod:`worker.store.reference_pages`'.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from itertools import groupby
from typing import Any

from worker.store.schema import OPEN_STATES

REFERENCE_FIELDS = (
    "job",
    "image_url",
    "oss_bucket",
    "oss_object",
    "oss_region",
    "data_id",
    "referer",
    "source",
    "line",
)
SUMMARY_FIELDS = ("status", "risk_level", "decision")
SERVICE_FIELDS = (
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
RISK_ORDER = ("none", "low", "medium", "high")  # the vendor's RiskLevel values, mildest first
DECISION_ORDER = ("unscanned", "pass", "review", "block")  # mildest first


def reference_state(states: Sequence[str]) -> str:
    """One reference's state from its services' rows: ``done`` only when all are done;
    ``rejected`` for a rejected line; while any row is open, the earliest open state (the
    reference is as far as its slowest service); then ``paused`` (a budget holds one), then
    ``failed`` (no row open, at least one failed)."""
    if all(state == "done" for state in states):
        return "done"
    if "rejected" in states:
        return "rejected"
    for state in (*OPEN_STATES, "paused", "failed"):
        if state in states:
            return state
    return states[0]


def _most(values: Iterable[str | None], order: Sequence[str]) -> str | None:
    known = [value for value in values if value in order]
    return max(known, key=order.index) if known else None


def reference_records(
    per_service: Iterable[tuple[str, str, dict[str, Any]]],
) -> Iterator[dict[str, Any]]:
    """``(ref_key, service, one-service record)`` triples, a reference's together, in export
    order -> one record per reference with ``results: {service: {...}}``."""
    for _, group in groupby(per_service, key=lambda triple: triple[0]):
        rows = [(service, record) for _, service, record in group]
        first = rows[0][1]
        results = {
            service: {name: record[name] for name in SERVICE_FIELDS} for service, record in rows
        }
        line = {name: first[name] for name in REFERENCE_FIELDS}
        line["status"] = reference_state([r["status"] for r in results.values()])
        line["risk_level"] = _most((r["risk_level"] for r in results.values()), RISK_ORDER)
        line["decision"] = _most((r["decision"] for r in results.values()), DECISION_ORDER)
        line["results"] = results
        yield line


def csv_fields(services: Sequence[str]) -> tuple[str, ...]:
    """The CSV header of a job of ``services``: the reference's fields, the summary, then each
    service's fields prefixed with its name."""
    prefixed = tuple(f"{service}.{name}" for service in services for name in SERVICE_FIELDS)
    return (*REFERENCE_FIELDS, *SUMMARY_FIELDS, *prefixed)


def label_cell(labels: list[dict[str, Any]]) -> str:
    """Labels as one cell: ``label:confidence;...`` (a label without a confidence bare)."""
    return ";".join(
        label["label"]
        if label["confidence"] is None
        else f"{label['label']}:{label['confidence']:g}"
        for label in labels
    )


def flat_record(record: dict[str, Any]) -> dict[str, Any]:
    """A reference record as one CSV row: ``results`` spread into prefixed columns, labels as
    :func:`label_cell`, Ext as a JSON string."""
    flat = {name: value for name, value in record.items() if name != "results"}
    for service, result in record["results"].items():
        for name, value in result.items():
            if name == "labels":
                value = label_cell(value)
            elif name == "ext":
                value = None if value is None else json.dumps(value, ensure_ascii=False)
            flat[f"{service}.{name}"] = value
    return flat
