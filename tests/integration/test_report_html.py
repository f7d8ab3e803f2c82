"""`imgmod report JOB --html FILE` in a real browser: a real job on the emulator fills the
database, headless Chromium opens the file, and every number the page shows (its tables, and
the data its Chart.js charts were drawn from) is checked against SQL. No console error, no
network request, and a screenshot for a person to look at."""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa

from tests.support import run_imgmod, wait_until
from tests.support.browser import console_errors, screenshot
from worker import store
from worker.store.schema import decisions

pytestmark = pytest.mark.service

# Every table of the page as {chart: [row's data- attributes]}, and each chart's drawn data.
READ_TABLES = """
const out = {};
for (const el of document.querySelectorAll('[data-chart]:not(canvas)')) {
  const rows = el.tagName === 'TABLE'
    ? [...el.querySelectorAll('tbody tr')].map(tr => {
        const row = {...tr.dataset};
        const cells = [...tr.querySelectorAll('td[data-bucket]')];
        if (cells.length) row.histogram = cells.map(td => Number(td.dataset.value));
        return row;
      })
    : [{...el.dataset}];
  out[el.dataset.chart] = rows;
}
return out;
"""
READ_CHARTS = """
const out = {};
for (const canvas of document.querySelectorAll('canvas[data-chart]')) {
  const chart = Chart.getChart(canvas);
  out[canvas.dataset.chart] = chart ? {
    labels: chart.data.labels,
    datasets: chart.data.datasets.map(d => ({label: d.label || null, data: d.data})),
  } : null;
}
return out;
"""


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """One backend (the default) is enough here: the figures' SQL is checked on both by
    test_chart_figures.py, and the page does not depend on the database."""
    return sqlite_url


def _add_decisions(engine: sa.Engine, job_id: int) -> None:
    """What `imgmod decide` stores, written directly: policy v1 over every item, then v2 over
    the answered ones (the report counts every version that ran)."""
    with engine.begin() as conn:
        ids = conn.execute(
            sa.select(store.items.c.id, store.items.c.state)
            .where(store.items.c.job_id == job_id, store.items.c.state != "rejected")
            .order_by(store.items.c.id)
        ).all()
        now = datetime.now(timezone.utc)
        rows = []
        for version, picks in (("1", ids), ("2", [r for r in ids if r.state == "done"])):
            for n, (item_id, state) in enumerate(picks):
                decision = "unscanned" if state != "done" else ("review" if n % 4 else "block")
                if version == "2" and decision == "review":
                    decision = "pass"
                rows.append(
                    dict(
                        item_id=item_id,
                        job_id=job_id,
                        decision=decision,
                        rule="r",
                        policy_name="house",
                        policy_version=version,
                        policy_hash="h" * 64,
                        source="policy",
                        actor="test",
                        decided_at=now,
                    )
                )
        conn.execute(sa.insert(decisions), rows)


def _counts(rows: list[dict]) -> dict[str, int]:
    return {row["key"]: int(row["value"]) for row in rows}


def test_the_html_report_shows_what_sql_holds_in_a_real_browser(pipeline, browser, tmp_path):
    img = pipeline.images
    lines = [img.image_url(i, ["png", "jpg", "gif"][i % 3]) for i in range(24)]
    lines += [f"{img.url}/missing/{i}.png" for i in range(3)]
    lines += ["ftp://example.com/x.png", "javascript:alert('<b>x</b>')"]
    src = pipeline.write("refs.txt", lines)
    pipeline.start_worker()
    run = pipeline.imgmod("run", str(src), "--job", "nightly", "--stall-seconds", "60")
    assert run.returncode == 3, run.stdout + run.stderr
    job_id = pipeline.job_id("nightly")
    _add_decisions(pipeline.engine, job_id)

    out = tmp_path / "report.html"
    prices = {"IMGMOD_PRICE_PER_1000": "baselineCheck_global=0.6", "IMGMOD_PRICE_CURRENCY": "USD"}
    made = pipeline.imgmod("report", "nightly", "--html", str(out), **prices)
    assert made.returncode == 0, made.stdout + made.stderr
    assert made.stdout.startswith(f"report: wrote {out} (")

    browser.get(out.as_uri())
    canvases = browser.execute_script("return document.querySelectorAll('canvas').length")
    wait_until(
        lambda: browser.execute_script("return Object.keys(Chart.instances).length") == canvases,
        10,
        "every chart drawn",
    )
    tables = browser.execute_script(READ_TABLES)
    charts = browser.execute_script(READ_CHARTS)
    path = screenshot(browser, "report_html")
    assert path.stat().st_size > 10_000
    # readable in print: Chromium's own print to PDF, kept beside the screenshot
    pdf = base64.b64decode(browser.print_page())
    assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page") >= 2
    path.with_suffix(".pdf").write_bytes(pdf)
    assert console_errors(browser) == []
    # self-contained: the page fetched nothing, not even from the file system
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    assert browser.find_element("id", "job-name").text == "nightly"

    q = f"WHERE job_id = {job_id}"
    states = dict(pipeline.rows(f"SELECT state, count(*) FROM items {q} GROUP BY state"))
    assert {k: v for k, v in _counts(tables["states"]).items() if v} == states
    assert states == {"done": 24, "failed": 3, "rejected": 2}
    assert dict(zip(charts["states"]["labels"], charts["states"]["datasets"][0]["data"])) == (
        _counts(tables["states"])
    )

    risks = dict(
        pipeline.rows(
            f"SELECT coalesce(risk_level, 'unknown'), count(*) FROM results {q} GROUP BY 1"
        )
    )
    assert _counts(tables["risks"]) == risks and sum(risks.values()) == 24
    assert dict(zip(charts["risks"]["labels"], charts["risks"]["datasets"][0]["data"])) == risks

    labels = {
        label: (images, rows)
        for label, images, rows in pipeline.rows(
            f"SELECT label, count(DISTINCT item_id), count(*) FROM result_labels {q} GROUP BY label"
        )
    }
    shown = {r["key"]: (int(r["images"]), sum(r["histogram"])) for r in tables["labels"]}
    assert shown and all(shown[label] == labels[label] for label in shown)
    assert len(shown) == min(20, len(labels))
    drawn = charts["labels"]
    for i, row in enumerate(tables["labels"]):
        assert drawn["labels"][i] == row["key"]
        assert [d["data"][i] for d in drawn["datasets"]] == row["histogram"]

    decided = {
        (version, decision): n
        for version, decision, n in pipeline.rows(
            "SELECT policy_version, decision, count(*) FROM decisions "
            f"{q} GROUP BY policy_version, decision"
        )
    }
    shown_decisions = {
        (r["version"], r["key"]): int(r["value"]) for r in tables["decisions"] if int(r["value"])
    }
    assert shown_decisions == decided
    assert decided[("1", "unscanned")] == 3 and ("2", "unscanned") not in decided
    assert charts["decisions"]["labels"] == ["house 1", "house 2"]

    failures = dict(
        pipeline.rows(
            f"SELECT last_code, count(*) FROM items {q} AND state = 'failed' GROUP BY last_code"
        )
    )
    assert _counts(tables["failures"]) == failures == {"404": 3}

    answered = pipeline.scalar(f"SELECT count(*) FROM results {q}")
    timeline = tables["timeline"]
    assert sum(int(r["answers"]) for r in timeline) == answered == 24
    assert sum(int(r["failures"]) for r in timeline) == 3
    assert charts["timeline"]["datasets"][0]["data"] == [int(r["answers"]) for r in timeline]

    billed = pipeline.scalar(f"SELECT count(*) FROM results {q} AND code = '200'")
    assert billed == pipeline.emulator.stats()["billed"] == 24
    (billing,) = tables["billing"]
    assert int(billing["billed"]) == billed and int(billing["reused"]) == 0
    assert Decimal(billing["cost"]) == (Decimal("0.6") * billed / 1000).quantize(Decimal("0.01"))

    rejected = [r.line for r in pipeline.rows(f"SELECT line FROM items {q} AND state = 'rejected'")]
    assert sorted(int(r["line"]) for r in tables["rejected"]) == sorted(rejected)
    # the rejected line's text came from the archive: shown as text, never as markup
    assert browser.find_elements("css selector", "#rejected b") == []


def test_the_html_report_refuses_a_bad_path_in_one_line(sqlite_url, tmp_path):
    store.upgrade(sqlite_url)
    engine = store.make_engine(sqlite_url)
    store.get_or_create_job(engine, "j", "baselineCheck_global", "")
    engine.dispose()
    env = {"IMGMOD_DATABASE_URL": sqlite_url}
    missing = tmp_path / "no-such-dir" / "r.html"
    bad = run_imgmod(env, "report", "j", "--html", str(missing))
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert f"cannot write the HTML report to {missing}" in bad.stderr
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    both = run_imgmod(env, "report", "j", "--html", str(tmp_path / "r.html"), "--json")
    assert both.returncode == 2 and "--json and --html" in both.stderr
    assert not (tmp_path / "r.html").exists()
