"""Budgets that hold, against the emulator's billing count: real Celery workers, real Redis
(the reservations), SQLite and PostgreSQL (the ledger), ``imgmod`` as a user runs it.

The issue's checks: a dry run bills 0; a job with ``--max-calls 50`` over 200 images bills
exactly 50, leaves 150 waiting with the budget's reason, and ``resume`` after raising the cap
finishes them with 200 billed in all; two workers on a shared daily budget of 100 over 300
images bill exactly 100.
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from worker.cli.errors import EXIT_BUDGET
from worker.processes import free_port, wait_until

pytestmark = pytest.mark.service


def _ledger(pipeline, job: str) -> int:
    """Billed calls the workers recorded in SQL for ``job`` (they flush once a second)."""
    return int(
        pipeline.scalar(
            "SELECT coalesce(sum(calls), 0) FROM billed_calls JOIN jobs ON jobs.id = job_id "
            f"WHERE jobs.name = '{job}'"
        )
    )


def _states(pipeline, job: str) -> dict[str, int]:
    return {state: n for state, n in pipeline.counts(job).items() if n}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_dry_run_reads_everything_and_bills_nothing(pipeline) -> None:
    lines = [pipeline.images.image_url(i) for i in range(20)]
    src = pipeline.write("dry.txt", [*lines, lines[0], "ftp://nope/x.png"])

    out = pipeline.imgmod(
        "run",
        str(src),
        "--job",
        "dry",
        "--dry-run",
        "--json",
        IMGMOD_PRICE_PER_1000="baselineCheck_global=1.25",
        IMGMOD_PRICE_CURRENCY="USD",
    )

    assert out.returncode == 0, out.stdout + out.stderr
    estimate = json.loads(out.stdout)
    assert (estimate["lines"], estimate["accepted"], estimate["rejected"]) == (22, 20, 1)
    assert estimate["duplicates"] == 1
    assert estimate["calls"] == {"baselineCheck_global": 20}
    assert estimate["estimated_cost"] == "0.025" and estimate["currency"] == "USD"
    assert estimate["estimated_seconds"] > 0
    assert pipeline.settled_stats()["billed"] == 0
    assert pipeline.scalar("SELECT count(*) FROM jobs") == 0
    text = pipeline.imgmod(
        "enqueue", str(src), "--job", "dry", "--dry-run", "--max-calls", "5", check=True
    ).stdout
    assert "with --max-calls 5: 5 billed, 15 would wait as paused" in text
    assert "calls that would be billed (baselineCheck_global): 20" in text
    assert "estimated cost: unknown" in text and "IMGMOD_PRICE_PER_1000" in text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # PostgreSQL: below
def test_max_calls_bills_exactly_the_cap_and_resume_finishes_the_rest(pipeline) -> None:
    src = pipeline.urls(200)
    pipeline.start_worker()

    first = pipeline.imgmod("run", str(src), "--job", "capped", "--max-calls", "50")

    assert first.returncode == EXIT_BUDGET, first.stdout + first.stderr
    assert "150 references paused: job budget (--max-calls) 50 reached" in first.stderr
    assert "imgmod resume capped --max-calls N" in first.stderr
    assert pipeline.settled_stats()["billed"] == 50
    assert _states(pipeline, "capped") == {"done": 50, "paused": 150}
    wait_until(lambda: _ledger(pipeline, "capped") == 50, 30, "the ledger to record 50 calls")
    status = json.loads(pipeline.imgmod("status", "capped", "--json", check=True).stdout)
    assert status["budget"]["job"] == {"cap": 50, "used": 50, "left": 0}
    assert status["budget"]["paused"] == {"paused: job budget (--max-calls) 50 reached": 150}
    text = pipeline.imgmod("status", "capped", check=True).stdout
    assert "job budget (--max-calls): 50 of 50 calls used, 0 left" in text
    report = pipeline.imgmod("report", "capped", check=True).stdout
    assert "150 paused: job budget (--max-calls) 50 reached" in report
    exported = [
        json.loads(x) for x in pipeline.imgmod("export", "capped", check=True).stdout.splitlines()
    ]
    paused = [r for r in exported if r["status"] == "paused"]
    assert len(paused) == 150 and {(r["code"], r["msg"]) for r in paused} == {
        ("budget", "paused: job budget (--max-calls) 50 reached")
    }

    resumed = pipeline.imgmod("resume", "capped", "--max-calls", "200")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "reopened 150 references paused on a budget" in resumed.stdout
    done = pipeline.imgmod("wait", "capped", "--timeout", "120")

    assert done.returncode == 0, done.stdout + done.stderr
    assert pipeline.settled_stats()["billed"] == 200
    assert _states(pipeline, "capped") == {"done": 200}
    assert pipeline.results_per_item_max() == 1
    wait_until(lambda: _ledger(pipeline, "capped") == 200, 30, "the ledger to record 200")
    costs = json.loads(pipeline.imgmod("costs", "--job", "capped", "--json", check=True).stdout)
    assert costs["calls"] == 200 and costs["cost"] is None


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_workers_on_a_shared_daily_budget_bill_exactly_the_budget(pipeline) -> None:
    src = pipeline.urls(300)
    daily = {"IMGMOD_DAILY_CALL_BUDGET": "100"}
    port = free_port()
    pipeline.start_worker(**daily, IMGMOD_METRICS_PORT=str(port))
    pipeline.start_worker(**daily)

    run = pipeline.imgmod("run", str(src), "--job", "daily", **daily)

    assert run.returncode == EXIT_BUDGET, run.stdout + run.stderr
    assert "paused: daily budget 100 reached" in run.stderr
    assert pipeline.settled_stats()["billed"] == 100
    assert _states(pipeline, "daily") == {"done": 100, "paused": 200}
    assert pipeline.results_per_item_max() == 1
    wait_until(lambda: _ledger(pipeline, "daily") == 100, 30, "the ledger to record 100")
    costs = pipeline.imgmod("costs", "--job", "daily", check=True).stdout
    assert "daily  baselineCheck_global  100 calls" in costs

    def scraped() -> str:
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:  # our loopback endpoint
            return response.read().decode()

    wanted = ('imgmod_budget_used{budget="daily"} 100.0', 'imgmod_budget_left{budget="daily"} 0.0')
    wait_until(lambda: all(w in scraped() for w in wanted), 30, "budget gauges")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_answers_that_are_not_billed_give_their_unit_back(pipeline) -> None:
    good = [pipeline.images.image_url(i) for i in range(5)]
    gone = [f"{pipeline.images.url}/missing/{i}.png" for i in range(5)]  # Code 404, not billed
    src = pipeline.write("mixed.txt", [x for pair in zip(gone, good, strict=True) for x in pair])
    pipeline.start_worker(concurrency=1)  # one call in flight: no unit is held by another call

    run = pipeline.imgmod("run", str(src), "--job", "mixed", "--max-calls", "5")

    # Every 404 took a unit and gave it back, so the 5 good images got all 5 (a 404 retried
    # after they did finds the cap reached and waits, paused: it could have been billed).
    assert run.returncode in (3, 4), run.stdout + run.stderr
    assert pipeline.settled_stats()["billed"] == 5
    states = dict(pipeline.rows("SELECT image_url, state FROM items"))
    assert {states[url] for url in good} == {"done"}
    assert {states[url] for url in gone} <= {"failed", "paused"}
