"""The HTML report's pure parts: time buckets, histograms, cost, ordering, and the rendered page
(self-contained, escaped, numbers in its tables). The page in a real browser, filled by a real
job, is tests/integration/test_report_html.py."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from worker import report_data as rd
from worker.report_html import ReportNotWritten, render_html, write_html

T0 = datetime(2026, 12, 6, 12, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("span", "width"),
    [
        (0, 1),
        (59, 1),
        (61, 2),
        (300, 5),
        (3600, 60),
        (3601, 120),
        (86400, 1800),
        (30 * 86400, 43200),
        (100 * 86400, 172800),
    ],
)
def test_bucket_width_is_a_readable_width_giving_at_most_60_buckets(span, width):
    assert rd.bucket_width(span) == width
    assert span / rd.bucket_width(span) <= rd.MAX_TIME_BUCKETS


def test_histogram_puts_labels_without_confidence_last():
    assert rd.histogram([(0, 2), (9, 5), (None, 1), (9, 1)]) == (2, 0, 0, 0, 0, 0, 0, 0, 0, 6, 1)
    assert rd.bucket_names()[0] == "0-10"
    assert rd.bucket_names()[-2:] == ("90-100", "none")


def test_cost_is_exact_to_the_cent_and_absent_without_a_price():
    assert rd.cost(1234, Decimal("0.6")) == Decimal("0.74")
    assert rd.cost(1234, None) is None


def test_ordered_keeps_the_known_order_then_the_rest_by_size():
    counts = {"low": 3, "weird": 1, "high": 2, "other": 7}
    got = rd.ordered(counts, rd.RISK_ORDER, keep_zero=False)
    assert [(c.key, c.value) for c in got] == [("high", 2), ("low", 3), ("other", 7), ("weird", 1)]
    assert [c.key for c in rd.ordered({}, rd.DECISION_ORDER, keep_zero=True)] == list(
        rd.DECISION_ORDER
    )


def test_timeline_lists_every_bucket_with_empty_ones_as_zero():
    points = rd.timeline(T0, T0 + timedelta(seconds=9), [(0, 4), (4, 10)], [(2, 1)], 2)
    assert [p.answers for p in points] == [4, 0, 0, 0, 10]
    assert [p.failures for p in points] == [0, 0, 1, 0, 0]
    assert points[4].per_second == 5.0
    assert points[0].start == "2026-12-06T12:00:00Z" and points[1].label == "12:00:02"
    assert rd.timeline(None, None, [], [], 1) == ()


def _data(**overrides) -> rd.ReportData:
    fields = dict(
        job="nightly",
        service="baselineCheck_global",
        created_at="2026-12-06T12:00:00Z",
        finished_at=None,
        generated_at="2026-12-06T13:00:00Z",
        total_lines=12,
        duplicates=1,
        states=(rd.Count("pending", 0), rd.Count("done", 9), rd.Count("rejected", 2)),
        risks=(rd.Count("high", 3), rd.Count("none", 6)),
        bucket_names=rd.bucket_names(),
        labels=(
            rd.LabelFigure("<img src=x onerror=alert(1)>", 3, 91.5, (0,) * 9 + (3, 0)),
            rd.LabelFigure("nonLabel", 6, None, (0,) * 10 + (6,)),
        ),
        decisions=(),
        failures=(rd.Count("404", 1),),
        bucket_seconds=1,
        timeline=rd.timeline(T0, T0 + timedelta(seconds=2), [(0, 5), (2, 4)], [], 1),
        billing=rd.Billing(9, 1, Decimal("0.6"), "USD", rd.cost(9, Decimal("0.6"))),
        rejected=(rd.Rejected("refs.txt", 3, "line 3: imageUrl: </td><script>x()</script>"),),
        rejected_total=2,
    )
    fields.update(overrides)
    return rd.ReportData(**fields)


def test_the_page_loads_nothing_from_anywhere_and_inlines_chart_js():
    html = render_html(_data(labels=(), rejected=()))  # no archive text that mentions src=
    assert not re.search(r"""<[a-z]+\b[^>]*\b(src|href)\s*=""", html, re.IGNORECASE)
    assert not re.search(r"@import|url\(", html)
    assert "Chart.js v4.6.2" in html and "imgmodCharts" in html
    assert "sourceMappingURL" not in html
    assert "@media print" in html


def test_archive_text_is_escaped_in_the_tables_and_the_figures():
    html = render_html(_data())
    assert "<img src=x" not in html and "<script>x()" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    figures = re.search(
        r'<script type="application/json" id="imgmod-figures">(.*?)</script>', html, re.S
    )
    assert figures is not None
    parsed = json.loads(figures.group(1))
    assert parsed["labels"][0]["label"] == "<img src=x onerror=alert(1)>"
    assert parsed["billing"]["cost"] == "0.01"


def test_every_chart_has_its_numbers_in_a_table():
    html = render_html(_data())
    assert 'data-chart="states"' in html and 'data-key="done" data-value="9"' in html
    assert 'data-key="high" data-value="3"' in html
    assert 'data-bucket="90-100" data-value="3"' in html
    assert 'data-key="2026-12-06T12:00:02Z" data-answers="4"' in html
    assert 'data-billed="9"' in html and 'data-cost="0.01"' in html
    assert 'data-source="refs.txt" data-line="3"' in html


def test_without_decisions_or_prices_the_page_says_so():
    html = render_html(_data(billing=rd.Billing(9, 0, None, "", None)))
    assert "No decisions yet" in html and "imgmod decide nightly" in html
    assert "data-cost" not in html and 'canvas data-chart="decisions"' not in html


def test_decisions_by_policy_version_are_tabled():
    counts = rd.ordered({"block": 2, "pass": 7}, rd.DECISION_ORDER, keep_zero=True)
    html = render_html(_data(decisions=(rd.PolicyDecisions("policy", "default", "1", counts),)))
    assert 'data-policy="default" data-version="1" data-key="block" data-value="2"' in html
    assert 'data-key="review" data-value="0"' in html


def test_write_html_replaces_the_file_whole_and_names_a_bad_path(tmp_path):
    target = tmp_path / "r.html"
    target.write_text("old")
    assert write_html("<p>new</p>", target) == len("<p>new</p>")
    assert target.read_text() == "<p>new</p>"
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]
    with pytest.raises(ReportNotWritten, match="missing/r.html"):
        write_html("x", tmp_path / "missing" / "r.html")
