"""The figures behind the report's charts, as plain dataclasses: one call, one job.

Why its own module: ``imgmod report --html`` (:mod:`worker.report_html`) draws them into a
file, and the review page's live dashboard draws the same figures with the same chart code
(``worker/assets/report_charts.js``, fed by :func:`chart_json`). The counting is the
database's (:mod:`worker.store.queries`, :mod:`worker.store.chart_figures`); the shaping here
(bucket widths, histograms, cost) is pure and unit-tested.

A job asking several services of every reference has one row per (reference, service): its
figures are also broken down per service (:class:`ServiceReport`, each service's calls priced
at that service's own price), and its references counted once (``references``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy.engine import Engine

from worker.prices import Prices
from worker.store import chart_figures
from worker.store.jobs import Job
from worker.store.queries import job_figures, state_counts
from worker.store.service_figures import ServiceFigures, reference_counts, service_figures

TOP_LABELS = 20
REJECTED_LIMIT = 1000
MAX_TIME_BUCKETS = 60
# Bucket widths a person reads without arithmetic: seconds, minutes, hours, days.
# fmt: off
NICE_WIDTHS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
               43200, 86400)
# fmt: on
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
    earlier jobs (calls saved), and the cost when a price per 1,000 calls is set. For a whole
    job of several services ``price_per_1000`` is None (each service has its own) and ``cost``
    is the services' costs added up, None unless every service is priced."""

    billed_calls: int
    reused: int
    price_per_1000: Decimal | None
    currency: str
    cost: Decimal | None


@dataclass(frozen=True)
class ServiceReport:
    """One service's share of a job: its rows per state (a rejected line counts under the
    job's first service), its answers' risk levels and top labels, its failures, and its
    billed calls at its own price."""

    service: str
    states: tuple[Count, ...]
    risks: tuple[Count, ...]
    labels: tuple[LabelFigure, ...]
    failures: tuple[Count, ...]
    billing: Billing


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
    services: tuple[ServiceReport, ...] = ()  # one per service the job asks, in its order
    references: tuple[Count, ...] = ()  # references counted once (REFERENCE_STATES order)

    @property
    def several_services(self) -> bool:
        """Whether the report breaks down by service (a one-service job's reads as before)."""
        return len(self.services) > 1


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


def service_billing(service: str, billed: int, reused: int, prices: Prices) -> Billing:
    """``service``'s billed calls at its own price (cost None when it has none)."""
    price = prices.per_1000.get(service)
    return Billing(billed, reused, price, prices.currency, cost(billed, price))


def total_billing(parts: tuple[Billing, ...], billed: int, reused: int, currency: str) -> Billing:
    """The whole job's billing from its services' (``parts``): the cost is the services'
    costs (each exact to the cent, like a bill's lines) added up, None unless every service is
    priced; the price is the one service's, None for several (each has its own)."""
    costs = [part.cost for part in parts if part.cost is not None]
    total = sum(costs, Decimal("0.00")) if parts and len(costs) == len(parts) else None
    price = parts[0].price_per_1000 if len(parts) == 1 else None
    return Billing(billed, reused, price, currency, total)


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


def _label_figures(
    engine: Engine, job: Job, top: list[tuple[str, int, float | None]], service: str | None
) -> tuple[LabelFigure, ...]:
    names = [label for label, _, _ in top]
    per_label: dict[str, list[tuple[int | None, int]]] = {}
    for label, bucket, n in chart_figures.label_histograms(engine, job, names, service):
        per_label.setdefault(label, []).append((bucket, n))
    return tuple(
        LabelFigure(label, images, highest, histogram(per_label.get(label, [])))
        for label, images, highest in top
    )


def _service_report(
    engine: Engine, job: Job, figures: ServiceFigures, prices: Prices
) -> ServiceReport:
    return ServiceReport(
        service=figures.service,
        states=tuple(Count(k, v) for k, v in figures.by_state.items()),
        risks=ordered(
            {("unknown" if k is None else k): n for k, n in figures.by_risk},
            RISK_ORDER,
            keep_zero=False,
        ),
        labels=_label_figures(engine, job, figures.top_labels, figures.service),
        failures=ordered(
            {("unknown" if k is None else k): n for k, n in figures.failures_by_code},
            (),
            keep_zero=False,
        ),
        billing=service_billing(figures.service, figures.billable_calls, figures.reused, prices),
    )


def report_data(
    engine: Engine,
    job: Job,
    *,
    prices: Prices | None = None,
    top_labels: int = TOP_LABELS,
    rejected_limit: int = REJECTED_LIMIT,
    now: datetime | None = None,
) -> ReportData:
    """Every figure of ``job``'s report, read with a few aggregate queries; the cost at
    ``prices`` (per service: :mod:`worker.prices`), none without them."""
    prices = prices or Prices()
    states = state_counts(engine, job.id)
    figures = job_figures(engine, job, top_labels=top_labels, rejected=rejected_limit)
    services = tuple(
        _service_report(engine, job, part, prices)
        for part in service_figures(engine, job, top_labels=top_labels)
    )
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
        labels=_label_figures(engine, job, figures.top_labels, None),
        decisions=_policy_decisions(chart_figures.decision_counts(engine, job)),
        failures=ordered(failures, (), keep_zero=False),
        bucket_seconds=width,
        timeline=points,
        billing=total_billing(
            tuple(part.billing for part in services),
            figures.billable_calls,
            figures.reused,
            prices.currency,
        ),
        rejected=tuple(Rejected(*sample) for sample in figures.rejected),
        rejected_total=states.get("rejected", 0),
        services=services,
        references=tuple(Count(k, v) for k, v in reference_counts(engine, job).items()),
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
