"""The figures behind the report's charts, as plain dataclasses: one call, one job.

Why its own module: ``imgmod report --html`` (:mod:`worker.report_html`) draws them into a
file, and the review page's live dashboard draws the same figures with the same chart code
(``worker/assets/report_charts.js``, fed by :func:`chart_json`). The counting is the
database's (:mod:`worker.store.queries`, :mod:`worker.store.chart_figures`); the shaping here
(bucket widths, histograms, cost) is pure and unit-tested.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy.engine import Engine

from worker.store import chart_figures
from worker.store.jobs import Job
from worker.store.queries import job_figures, state_counts

TOP_LABELS = 20
REJECTED_LIMIT = 1000
MAX_TIME_BUCKETS = 60
# Bucket widths a person reads without arithmetic: seconds, minutes, hours, days.
NICE_WIDTHS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
               43200, 86400)
RISK_ORDER = ("high", "medium", "low", "none", "unknown")
DECISION_ORDER = ("block", "review", "pass", "unscanned")
NO_CONFIDENCE = "none"


@dataclass(frozen=True)
class Count:
    key: str
    value: int


@dataclass(frozen=True)
class LabelFigure:
    """One of the top labels: images carrying it, its highest confidence, and how many of its
    label rows fall in each confidence bucket (``bucket_names``), "no confidence" last."""

    label: str
    images: int
    max_confidence: float | None
    histogram: tuple[int, ...]


@dataclass(frozen=True)
class PolicyDecisions:
    """Decisions stored by one policy version (or by reviewers: source ``review``)."""

    source: str
    policy: str
    version: str
    counts: tuple[Count, ...]  # DECISION_ORDER first, then any other decision

    @property
    def total(self) -> int:
        return sum(c.value for c in self.counts)


@dataclass(frozen=True)
class TimePoint:
    """One bucket of the timeline: answers stored and rows failed in it, and the answers'
    rate in calls per second."""

    start: str  # ISO 8601 UTC
    label: str  # what the chart's axis shows
    answers: int
    failures: int
    per_second: float


@dataclass(frozen=True)
class Rejected:
    source: str
    line: int
    error: str | None


@dataclass(frozen=True)
class Billing:
    """Calls the vendor bills (Code-200 answers of this job's own calls), answers reused from
    earlier jobs (calls saved), and the cost when a price per 1,000 calls is set."""

    billed_calls: int
    reused: int
    price_per_1000: Decimal | None
    currency: str
    cost: Decimal | None


@dataclass(frozen=True)
class ReportData:
    job: str
    service: str
    created_at: str
    finished_at: str | None
    generated_at: str
    total_lines: int
    duplicates: int
    states: tuple[Count, ...]
    risks: tuple[Count, ...]
    bucket_names: tuple[str, ...]
    labels: tuple[LabelFigure, ...]
    decisions: tuple[PolicyDecisions, ...]
    failures: tuple[Count, ...]
    bucket_seconds: int
    timeline: tuple[TimePoint, ...]
    billing: Billing
    rejected: tuple[Rejected, ...]
    rejected_total: int


def bucket_names() -> tuple[str, ...]:
    """``0-10``, ..., ``90-100``, then ``none`` (a label without a confidence)."""
    step = 100 // chart_figures.CONFIDENCE_BUCKETS
    names = tuple(f"{i * step}-{(i + 1) * step}" for i in range(chart_figures.CONFIDENCE_BUCKETS))
    return (*names, NO_CONFIDENCE)


def bucket_width(span_seconds: float, max_buckets: int = MAX_TIME_BUCKETS) -> int:
    """The smallest readable width (:data:`NICE_WIDTHS`, then whole days) that cuts
    ``span_seconds`` into at most ``max_buckets`` buckets."""
    need = max(1.0, span_seconds / max_buckets)
    for width in NICE_WIDTHS:
        if width >= need:
            return width
    return 86400 * math.ceil(need / 86400)


def cost(billed_calls: int, price_per_1000: Decimal | None) -> Decimal | None:
    """What the billed calls cost at ``price_per_1000`` (None when no price is set), exact to
    the cent like the user's bill."""
    if price_per_1000 is None:
        return None
    return (price_per_1000 * billed_calls / 1000).quantize(Decimal("0.01"))


def histogram(rows: list[tuple[int | None, int]]) -> tuple[int, ...]:
    """Counts per bucket (``bucket_names`` order) from (bucket, count) pairs; None is last."""
    counts = [0] * (chart_figures.CONFIDENCE_BUCKETS + 1)
    for bucket, n in rows:
        counts[chart_figures.CONFIDENCE_BUCKETS if bucket is None else bucket] += n
    return tuple(counts)


def ordered(counts: dict[str, int], order: tuple[str, ...], keep_zero: bool) -> tuple[Count, ...]:
    """``counts`` in ``order`` first (zeros kept when ``keep_zero``), then the rest by size."""
    known = [Count(k, counts.get(k, 0)) for k in order if keep_zero or counts.get(k, 0)]
    rest = sorted(((k, v) for k, v in counts.items() if k not in order), key=lambda kv: -kv[1])
    return (*known, *(Count(k, v) for k, v in rest))


def timeline(
    start: datetime | None,
    end: datetime | None,
    answers: list[tuple[int, int]],
    failures: list[tuple[int, int]],
    width: int,
) -> tuple[TimePoint, ...]:
    """Every bucket from ``start`` to ``end`` (empty ones as zeros, so the chart's time axis
    is even), from the database's (bucket, count) pairs."""
    if start is None or end is None:
        return ()
    origin = int(start.timestamp())
    last = max(0, (int(end.timestamp()) - origin) // width)
    by_answers, by_failures = dict(answers), dict(failures)
    span_days = (end - start) >= timedelta(days=1)
    points = []
    for index in range(last + 1):
        moment = datetime.fromtimestamp(origin + index * width, tz=timezone.utc)
        n = by_answers.get(index, 0)
        points.append(
            TimePoint(
                start=_iso(moment),
                label=moment.strftime("%m-%d %H:%M" if span_days else "%H:%M:%S"),
                answers=n,
                failures=by_failures.get(index, 0),
                per_second=round(n / width, 3),
            )
        )
    return tuple(points)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _policy_decisions(
    rows: list[tuple[str, str | None, str | None, str, int]],
) -> tuple[PolicyDecisions, ...]:
    grouped: dict[tuple[str, str, str], dict[str, int]] = {}
    for source, name, version, decision, n in rows:
        key = (source, name or ("reviewers" if source == "review" else "-"), version or "-")
        grouped.setdefault(key, {})[decision] = n
    return tuple(
        PolicyDecisions(source, name, version, ordered(counts, DECISION_ORDER, keep_zero=True))
        for (source, name, version), counts in grouped.items()
    )


def report_data(
    engine: Engine,
    job: Job,
    *,
    price_per_1000: Decimal | None = None,
    currency: str = "",
    top_labels: int = TOP_LABELS,
    rejected_limit: int = REJECTED_LIMIT,
    now: datetime | None = None,
) -> ReportData:
    """Every figure of ``job``'s report, read with a few aggregate queries."""
    states = state_counts(engine, job.id)
    figures = job_figures(engine, job, top_labels=top_labels, rejected=rejected_limit)
    names = [label for label, _, _ in figures.top_labels]
    per_label: dict[str, list[tuple[int | None, int]]] = {}
    for label, bucket, n in chart_figures.label_histograms(engine, job, names):
        per_label.setdefault(label, []).append((bucket, n))
    start, end = chart_figures.answer_span(engine, job)
    width = bucket_width((end - start).total_seconds()) if start and end else 1
    origin = int(start.timestamp()) if start else 0
    points = timeline(
        start,
        end,
        chart_figures.answers_over_time(engine, job, origin, width) if start else [],
        chart_figures.failures_over_time(engine, job, origin, width) if start else [],
        width,
    )
    risks = {("unknown" if k is None else k): n for k, n in figures.by_risk}
    failures = {("unknown" if k is None else k): n for k, n in figures.failures_by_code}
    return ReportData(
        job=job.name,
        service=job.service,
        created_at=_iso(job.created_at),
        finished_at=None if job.finished_at is None else _iso(job.finished_at),
        generated_at=_iso(now or datetime.now(timezone.utc)),
        total_lines=job.total_lines,
        duplicates=job.duplicates,
        states=tuple(Count(k, v) for k, v in states.items()),
        risks=ordered(risks, RISK_ORDER, keep_zero=False),
        bucket_names=bucket_names(),
        labels=tuple(
            LabelFigure(label, images, top, histogram(per_label.get(label, [])))
            for label, images, top in figures.top_labels
        ),
        decisions=_policy_decisions(chart_figures.decision_counts(engine, job)),
        failures=ordered(failures, (), keep_zero=False),
        bucket_seconds=width,
        timeline=points,
        billing=Billing(
            billed_calls=figures.billable_calls,
            reused=figures.reused,
            price_per_1000=price_per_1000,
            currency=currency,
            cost=cost(figures.billable_calls, price_per_1000),
        ),
        rejected=tuple(Rejected(*sample) for sample in figures.rejected),
        rejected_total=states.get("rejected", 0),
    )


def chart_json(data: ReportData) -> dict[str, Any]:
    """The figures as JSON-ready dicts, what ``report_charts.js`` draws from (amounts as
    decimal strings, so no cent is lost to a float)."""
    plain: dict[str, Any] = _plain(asdict(data))
    return plain


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
