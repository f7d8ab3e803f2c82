"""Several services per image, end to end: ``imgmod run --service a,b`` with real Celery
workers, Redis, SQLite and PostgreSQL, against the emulator's billing count.

The issue's check: a two-service job over N images bills 2N (N per service) and stores 2N
results; each (reference, service) pair is a row with its own state and answer; the export
gives one line per reference with a result per service; reuse is per service (an image
answered before by one service saves only that service's call).
"""

from __future__ import annotations

import csv
import io
import json

import pytest

from worker.cli.errors import EXIT_INCOMPLETE
from worker.processes import wait_until

pytestmark = pytest.mark.service

BASE, AIGC = "baselineCheck_global", "aigcDetector_global"
BOTH = f"{BASE},{AIGC}"


def test_a_two_service_job_bills_each_service_once_per_image(pipeline) -> None:
    n = 24
    src = pipeline.write("two.txt", [pipeline.images.image_url(i) for i in range(n)] + ["nope"])
    pipeline.start_worker()

    run = pipeline.imgmod("run", str(src), "--job", "two", "--service", BOTH)

    assert run.returncode == EXIT_INCOMPLETE, run.stdout + run.stderr  # the rejected line
    assert "job two: done 48, rejected 1" in run.stdout
    stats = pipeline.settled_stats()
    assert stats["billed"] == 2 * n
    assert stats["billed_by_service"] == {BASE: n, AIGC: n}
    assert pipeline.results_per_item_max() == 1
    job = pipeline.job_id("two")
    stored = pipeline.rows(
        f"SELECT service, count(*) FROM results WHERE job_id = {job} GROUP BY service"
    )
    assert dict(stored) == {BASE: n, AIGC: n}
    # One row per (reference, service), each done on its own; the rejected line once.
    rows = pipeline.rows(
        f"SELECT service, state, count(*) FROM items WHERE job_id = {job} GROUP BY service, state"
    )
    assert sorted(rows) == sorted([(BASE, "done", n), (AIGC, "done", n), (BASE, "rejected", 1)])
    wait_until(
        lambda: (
            pipeline.scalar(
                f"SELECT coalesce(sum(calls), 0) FROM billed_calls WHERE job_id = {job}"
            )
            == 2 * n
        ),
        30,
        "the ledger to record every call",
    )

    status = json.loads(pipeline.imgmod("status", "two", "--json", check=True).stdout)
    assert status["service"] == BOTH
    assert status["by_service"][AIGC]["done"] == n and status["by_service"][BASE]["done"] == n
    assert status["accepted"] == n

    lines = [
        json.loads(line)
        for line in pipeline.imgmod("export", "two", check=True).stdout.splitlines()
    ]
    assert len(lines) == n + 1  # one per reference, the rejected line included
    images = [line for line in lines if line["status"] == "done"]
    assert [line["image_url"] for line in images] == [
        pipeline.images.image_url(i) for i in range(n)
    ]
    for line in images:
        assert set(line["results"]) == {BASE, AIGC}
        for service in (BASE, AIGC):
            answer = line["results"][service]
            assert answer["status"] == "done" and answer["code"] == "200"
            assert answer["request_id"]
        assert line["results"][BASE]["request_id"] != line["results"][AIGC]["request_id"]
    assert [line["status"] for line in lines if "results" in line][-1] == "rejected"

    table = list(
        csv.DictReader(io.StringIO(pipeline.imgmod("export", "two", "--format", "csv").stdout))
    )
    assert len(table) == n + 1
    assert {f"{BASE}.risk_level", f"{AIGC}.labels", f"{AIGC}.request_id"} <= set(table[0])
    assert all(row[f"{AIGC}.status"] == "done" for row in table[:n])

    decided = pipeline.imgmod("decide", "two", check=True)
    assert "Traceback" not in decided.stderr
    assert pipeline.scalar(f"SELECT count(*) FROM decisions WHERE job_id = {job}") == 2 * n + 1
    line = json.loads(pipeline.imgmod("export", "two", check=True).stdout.splitlines()[0])
    assert {line["results"][BASE]["decision"], line["results"][AIGC]["decision"]} <= {
        "block", "review", "pass"
    }  # fmt: skip
    assert line["decision"] == max(
        (line["results"][s]["decision"] for s in (BASE, AIGC)),
        key=("pass", "review", "block").index,
    )
    story = pipeline.imgmod("history", pipeline.images.image_url(0), check=True).stdout
    assert f"in job two ({BASE}, item" in story and f"in job two ({AIGC}, item" in story

    again = pipeline.imgmod("run", str(src), "--job", "two", "--service", BOTH)
    assert again.returncode == EXIT_INCOMPLETE, again.stdout + again.stderr
    assert "0 accepted, 24 duplicate" in again.stdout
    assert pipeline.settled_stats()["billed"] == 2 * n  # every pair already there: no call


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_reuse_is_per_service(pipeline) -> None:
    """Images answered before by the baseline only: a two-service job over them and new ones
    pays the baseline for the new ones and the AIGC detector for all."""
    old, new = 8, 6
    pipeline.start_worker()
    first = pipeline.imgmod("run", str(pipeline.urls(old)), "--job", "base", "--service", BASE)
    assert first.returncode == 0, first.stdout + first.stderr
    assert pipeline.settled_stats()["billed_by_service"] == {BASE: old}

    src = pipeline.urls(old + new)
    run = pipeline.imgmod("run", str(src), "--job", "both", "--service", BOTH, "--reuse-urls")

    assert run.returncode == 0, run.stdout + run.stderr
    stats = pipeline.settled_stats()
    assert stats["billed_by_service"] == {BASE: old + new, AIGC: old + new}
    job = pipeline.job_id("both")
    reused = pipeline.rows(
        f"SELECT service, count(*) FROM items WHERE job_id = {job} AND reused_from IS NOT NULL "
        "GROUP BY service"
    )
    assert dict(reused) == {BASE: old}
    assert pipeline.scalar(f"SELECT count(*) FROM results WHERE job_id = {job}") == 2 * (old + new)
    exported = [
        json.loads(x) for x in pipeline.imgmod("export", "both", check=True).stdout.splitlines()
    ]
    assert sum(line["results"][BASE]["reused"] for line in exported) == old
    assert not any(line["results"][AIGC]["reused"] for line in exported)


def test_a_job_keeps_its_services(pipeline) -> None:
    src = pipeline.urls(2)
    pipeline.imgmod("enqueue", str(src), "--job", "fixed", "--service", BOTH, check=True)

    other = pipeline.imgmod("enqueue", str(src), "--job", "fixed", "--service", BASE)
    twice = pipeline.imgmod("enqueue", str(src), "--job", "x", "--service", f"{BASE},{BASE}")
    unknown = pipeline.imgmod("enqueue", str(src), "--job", "y", "--service", f"{BASE},nope")

    assert other.returncode != 0 and "already exists" in other.stderr
    assert twice.returncode != 0 and "given twice" in twice.stderr
    assert unknown.returncode != 0 and "'nope' is not a moderation service" in unknown.stderr
    for out in (other, twice, unknown):
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert pipeline.scalar("SELECT count(*) FROM jobs") == 1
    assert pipeline.scalar("SELECT count(*) FROM items") == 4
