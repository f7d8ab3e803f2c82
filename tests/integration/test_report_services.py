"""`imgmod report` for a job of two services, on SQLite and PostgreSQL: every figure per
service (rows per state, risk levels, top labels, billed calls, cost at each service's own
price) is what SQL counts, references are counted once, and the text, JSON and HTML reports
show both services. A one-service job's report keeps its shape (test_reports.py)."""

from __future__ import annotations

import dataclasses
import json
import re
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.integration.test_reports import new_item as one_service_item
from tests.support import run_imgmod, wait_until
from tests.support.browser import console_errors, screenshot
from worker import reports, store
from worker.prices import Prices
from worker.report_data import report_data
from worker.report_html import render_html
from worker.results import parse_response

pytestmark = pytest.mark.service

VENDOR = Path(__file__).resolve().parent.parent / "data" / "vendor"
BASE, AIGC = "baselineCheck_global", "aigcDetector_global"
PRICES = Prices({BASE: Decimal("0.6"), AIGC: Decimal("1.5")}, "USD")


def answer(name: str):
    return parse_response((VENDOR / name).read_text(encoding="utf-8"), http_status=200)


def new_item(n: int, service: str, state: str = "pending") -> store.NewItem:
    return dataclasses.replace(one_service_item(n, state), service=service)


# Reference n -> what each service's row ends as: an answer file, a failure code, or a state.
PLAN = {
    1: {BASE: "response_risk_detected.json", AIGC: "response_no_risk.json"},  # done
    2: {BASE: "response_no_risk.json", AIGC: "404"},  # failed
    3: {BASE: "response_custom_image_hit.json", AIGC: "queued"},  # open
    4: {BASE: "405", AIGC: "response_risk_detected.json"},  # failed
    5: {BASE: "pending", AIGC: "pending"},  # open
    7: {BASE: "response_no_risk.json", AIGC: "response_logo_detected.json"},  # done
}
REFERENCES = {"done": 2, "failed": 2, "open": 2, "rejected": 1}


def build_job(engine: sa.Engine, name: str = "two") -> store.Job:
    """Six references asked of both services (the producer's way: one batch per service) and a
    rejected line, recorded once under the first service."""
    job = store.get_or_create_job(engine, name, [BASE, AIGC], "")
    for service in job.services:
        store.insert_items(engine, job.id, [new_item(n, service) for n in PLAN])
    store.insert_items(engine, job.id, [new_item(6, BASE, "rejected")])
    with engine.connect() as conn:
        ids = {
            (line, service): item_id
            for item_id, line, service in conn.execute(
                sa.select(store.items.c.id, store.items.c.line, store.items.c.service).where(
                    store.items.c.job_id == job.id
                )
            )
        }
    for n, plan in PLAN.items():
        for service, outcome in plan.items():
            item_id = ids[(n, service)]
            if outcome.endswith(".json"):
                store.claim_item(engine, item_id, "w1", 60)
                store.record_result(engine, item_id, "w1", service, answer(outcome))
            elif outcome.isdigit():
                store.claim_item(engine, item_id, "w1", 60)
                store.record_failure(engine, item_id, "w1", outcome, "download failed", "E")
            elif outcome == "queued":
                store.mark_queued(engine, [item_id])
    return job


def sql(engine: sa.Engine, text: str, **params) -> list[sa.Row]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(text), params))


def per_service(rows: list[sa.Row]) -> dict[str, dict[str | None, int]]:
    out: dict[str, dict[str | None, int]] = {}
    for service, key, n in rows:
        out.setdefault(service, {})[key] = int(n)
    return out


def test_figures_per_service_are_what_sql_counts(engine):
    job = build_job(engine)
    rep = reports.build_report(engine, job, PRICES)
    q = {"job": job.id}

    assert [s.service for s in rep.services] == [BASE, AIGC]
    states = per_service(
        sql(
            engine,
            "SELECT service, state, count(*) FROM items WHERE job_id = :job "
            "GROUP BY service, state",
            **q,
        )
    )
    risks = per_service(
        sql(
            engine,
            "SELECT service, risk_level, count(*) FROM results WHERE job_id = :job "
            "GROUP BY service, risk_level",
            **q,
        )
    )
    billed = dict(
        sql(
            engine,
            "SELECT service, count(*) FROM results WHERE job_id = :job AND code = '200' "
            "GROUP BY service",
            **q,
        )
    )
    labels = {
        (service, label): (int(images), top)
        for service, label, images, top in sql(
            engine,
            "SELECT r.service, l.label, count(DISTINCT l.item_id), max(l.confidence) "
            "FROM result_labels l JOIN results r ON r.id = l.result_id "
            "WHERE l.job_id = :job GROUP BY r.service, l.label",
            **q,
        )
    }
    for part in rep.services:
        assert {k: v for k, v in part.by_state.items() if v} == states[part.service]
        assert dict(part.by_risk) == risks[part.service]
        assert part.billable_calls == billed[part.service]
        assert part.top_labels and all(
            labels[(part.service, label)] == (images, top) for label, images, top in part.top_labels
        )
        assert len(part.top_labels) == sum(1 for s, _ in labels if s == part.service)
    # the plan, spelled out: the SQL above is not vacuous
    assert states[BASE] == {"done": 3 + 1, "failed": 1, "pending": 1, "rejected": 1}
    assert states[AIGC] == {"done": 3, "failed": 1, "queued": 1, "pending": 1}
    assert billed == {BASE: 4, AIGC: 3} and rep.billable_calls == 7
    assert dict(rep.services[1].failures_by_code) == {"404": 1}
    assert dict(rep.services[0].failures_by_code) == {"405": 1}
    assert rep.references == REFERENCES

    # each service's calls at its own price, the total their sum
    assert [(c.service, c.billable_calls, c.cost) for c in rep.costs] == [
        (BASE, 4, Decimal("0.00")),  # 4 x 0.6 / 1000 = 0.0024
        (AIGC, 3, Decimal("0.00")),
    ]
    assert rep.cost == Decimal("0.00") and rep.currency == "USD"


def test_costs_are_each_services_billed_calls_at_its_own_price(engine):
    job = build_job(engine)
    dear = Prices({BASE: Decimal("1000"), AIGC: Decimal("2500")}, "EUR")
    rep = reports.build_report(engine, job, dear)
    assert [(c.service, c.cost) for c in rep.costs] == [
        (BASE, Decimal("4.00")),
        (AIGC, Decimal("7.50")),
    ]
    assert rep.cost == Decimal("11.50")
    data = report_data(engine, job, prices=dear)
    assert [(s.service, s.billing.cost) for s in data.services] == [
        (BASE, Decimal("4.00")),
        (AIGC, Decimal("7.50")),
    ]
    assert data.billing.cost == Decimal("11.50") and data.billing.price_per_1000 is None
    # one service unpriced: its own cost and the total are unknown, never a partial sum
    half = Prices({BASE: Decimal("1000")}, "EUR")
    rep = reports.build_report(engine, job, half)
    assert [c.cost for c in rep.costs] == [Decimal("4.00"), None] and rep.cost is None
    assert report_data(engine, job, prices=half).billing.cost is None
    assert reports.build_report(engine, job).costs == []  # no prices: calls only


def test_chart_figures_per_service_match_sql(engine):
    job = build_job(engine)
    data = report_data(engine, job, prices=PRICES)
    assert data.several_services
    assert {c.key: c.value for c in data.references} == REFERENCES
    rows = {
        (service, label): int(n)
        for service, label, n in sql(
            engine,
            "SELECT r.service, l.label, count(*) FROM result_labels l "
            "JOIN results r ON r.id = l.result_id WHERE l.job_id = :job "
            "GROUP BY r.service, l.label",
            job=job.id,
        )
    }
    for part in data.services:
        assert part.labels
        for figure in part.labels:  # the histogram holds that service's label rows only
            assert sum(figure.histogram) == rows[(part.service, figure.label)]
        assert part.billing.billed_calls == {BASE: 4, AIGC: 3}[part.service]
    assert [(c.key, c.value) for c in data.services[1].risks] == [("high", 2), ("none", 1)]


def test_the_text_report_shows_references_and_a_block_per_service(engine):
    job = build_job(engine)
    text = reports.render_report(reports.build_report(engine, job, PRICES))
    assert text.splitlines()[0].startswith("Job two (2 services; ")
    assert "  references:     done 2, failed 2, open 2, rejected 1" in text
    assert f"  service {BASE}:" in text and f"  service {AIGC}:" in text
    aigc = text.split(f"  service {AIGC}:")[1]
    assert "    rows:           done 3, failed 1, pending 1, queued 1" in aigc
    assert "    billable calls: 3" in aigc and "    failures by code: 404 1" in aigc
    assert "  cost:           0.00 USD" in text


def test_a_one_service_job_reports_as_before(engine):
    job = store.get_or_create_job(engine, "one", BASE, "")
    store.insert_items(engine, job.id, [new_item(1, BASE)])
    (item_id,) = [r.id for r in sql(engine, "SELECT id FROM items WHERE job_id = :j", j=job.id)]
    store.claim_item(engine, item_id, "w1", 60)
    store.record_result(engine, item_id, "w1", BASE, answer("response_risk_detected.json"))
    rep = reports.build_report(engine, job)
    text = reports.render_report(rep)
    assert text.splitlines()[0] == f"Job one ({BASE}; 0 lines read, 0 duplicates skipped)"
    assert "  states:         done 1" in text and "references" not in text
    assert "service " not in text and "cost" not in text
    assert "  top labels:                               images  max confidence" in text
    data = report_data(engine, job, prices=PRICES)
    assert not data.several_services and data.billing.price_per_1000 == Decimal("0.6")
    html = render_html(data)
    assert 'id="by-service"' not in html and 'data-figure="service-billing"' not in html


class _Tables(HTMLParser):
    """Every ``<tr>``'s data- attributes, by the enclosing table's data-figure / data-chart,
    inside the enclosing ``data-service`` article (None outside one)."""

    def __init__(self) -> None:
        super().__init__()
        self.service: str | None = None
        self.table: str | None = None
        self.rows: dict[tuple[str | None, str], list[dict[str, str]]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        if tag == "article" and "data-service" in found:
            self.service = found["data-service"]
        elif tag == "table":
            self.table = found.get("data-figure") or found.get("data-chart")
        elif tag == "tr" and self.table and any(k.startswith("data-") for k in found):
            row = {k[5:]: v for k, v in found.items() if k.startswith("data-")}
            self.rows.setdefault((self.service, self.table), []).append(row)

    def handle_endtag(self, tag: str) -> None:
        if tag == "article":
            self.service = None
        elif tag == "table":
            self.table = None


def test_the_html_report_tables_every_service(engine):
    job = build_job(engine)
    data = report_data(engine, job, prices=PRICES)
    html = render_html(data)
    parsed = _Tables()
    parsed.feed(html)
    t = parsed.rows

    def counts(key):
        return {r["key"]: int(r["value"]) for r in t[key] if int(r["value"])}

    assert f"2 services: {BASE}, {AIGC}" in html
    assert counts((None, "references")) == REFERENCES
    assert counts((BASE, "service-states")) == {"done": 4, "failed": 1, "pending": 1, "rejected": 1}
    assert counts((AIGC, "service-states")) == {"done": 3, "failed": 1, "pending": 1, "queued": 1}
    assert counts((AIGC, "service-failures")) == {"404": 1}
    for part in data.services:
        assert [r["key"] for r in t[(part.service, "service-labels")]] == [
            figure.label for figure in part.labels
        ]
    billing = {r["key"]: (int(r["billed"]), r["cost"]) for r in t[(None, "service-billing")]}
    assert billing == {BASE: (4, "0.00"), AIGC: (3, "0.00")}
    figures = json.loads(
        re.search(r'id="imgmod-figures">(.*?)</script>', html, re.S).group(1)  # type: ignore[union-attr]
    )
    assert [s["service"] for s in figures["services"]] == [BASE, AIGC]
    assert figures["services"][1]["billing"]["billed_calls"] == 3


def test_imgmod_report_prices_each_service_in_text_json_and_html(engine, database_url, tmp_path):
    job = build_job(engine)
    env = {
        "IMGMOD_DATABASE_URL": database_url,
        "IMGMOD_PRICE_PER_1000": f"{BASE}=1000,{AIGC}=2500",
        "IMGMOD_PRICE_CURRENCY": "EUR",
    }
    text = run_imgmod(env, "report", job.name, check=True).stdout
    assert "  cost:           11.50 EUR" in text and "    cost:           7.50 EUR" in text
    rep = json.loads(run_imgmod(env, "report", job.name, "--json", check=True).stdout)
    assert rep["cost"] == "11.50" and rep["references"] == REFERENCES
    assert [(s["service"], s["billable_calls"]) for s in rep["services"]] == [(BASE, 4), (AIGC, 3)]
    out = tmp_path / "r.html"
    run_imgmod(env, "report", job.name, "--html", str(out), check=True)
    html = out.read_text(encoding="utf-8")
    assert 'data-cost="11.50"' in html and 'data-key="aigcDetector_global"' in html


def test_the_html_report_shows_both_services_in_a_real_browser(browser, sqlite_url, tmp_path):
    store.upgrade(sqlite_url)
    engine = store.make_engine(sqlite_url)
    try:
        job = build_job(engine)
        out = tmp_path / "report.html"
        out.write_text(render_html(report_data(engine, job, prices=PRICES)), encoding="utf-8")
    finally:
        engine.dispose()
    browser.get(out.as_uri())
    canvases = browser.execute_script("return document.querySelectorAll('canvas').length")
    wait_until(
        lambda: browser.execute_script("return Object.keys(Chart.instances).length") == canvases,
        10,
        "every chart drawn",
    )
    shown = browser.execute_script(
        """return [...document.querySelectorAll('article[data-service]')].map(a => ({
             service: a.dataset.service, billed: Number(a.dataset.billed),
             visible: a.getBoundingClientRect().height > 0,
             heading: a.querySelector('h3').textContent}))"""
    )
    assert [(s["service"], s["billed"], s["heading"]) for s in shown] == [
        (BASE, 4, BASE),
        (AIGC, 3, AIGC),
    ]
    assert all(s["visible"] for s in shown)
    browser.execute_script("document.getElementById('by-service').scrollIntoView()")
    assert screenshot(browser, "report_html_services").stat().st_size > 10_000
    assert console_errors(browser) == []
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
