"""The read-only commands in-process, without services: click's CliRunner on ``status``,
``export`` and ``report`` against a SQLite file whose rows were written through the store API
(one answered image, one failed download, one refused line), and a bad setting refused.

The same commands run as subprocesses against real jobs in tests/integration; these pin what
each prints for a known set of rows, and run in a second.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from worker import store
from worker.cli import main
from worker.results import parse_response

VENDOR = Path(__file__).resolve().parents[1] / "data" / "vendor"
JOB = "archive"


def new_item(n: int, state: str = "pending") -> store.NewItem:
    rejected = state == "rejected"
    return store.NewItem(
        kind="invalid" if rejected else "url",
        ref_key=store.rejected_ref_key("in.txt", n) if rejected else f"https://e.com/{n}.jpg",
        image_url=None if rejected else f"https://e.com/{n}.jpg",
        oss_bucket=None,
        oss_object=None,
        oss_region=None,
        data_id=None if rejected else f"d{n}",
        referer=None,
        source="in.txt",
        line=n,
        state=state,
        last_error=f"line {n}: imageUrl: is not an absolute URL" if rejected else None,
        raw_input="not a url" if rejected else None,
    )


@pytest.fixture
def env(sqlite_url: str) -> dict[str, str]:
    """Settings for a migrated SQLite file holding job ``archive``: line 1 answered (high risk),
    line 2 failed with 404, line 3 a refused line."""
    store.upgrade(sqlite_url)
    engine = store.make_engine(sqlite_url)
    try:
        job = store.get_or_create_job(engine, JOB, "baselineCheck_global", "")
        answered, missing = sorted(store.insert_items(engine, job.id, [new_item(1), new_item(2)]))
        store.insert_items(engine, job.id, [new_item(3, "rejected")])
        body = (VENDOR / "response_risk_detected.json").read_text(encoding="utf-8")
        store.claim_item(engine, answered, "w1", 60)
        store.record_result(engine, answered, "w1", job.service, parse_response(body, 200))
        store.claim_item(engine, missing, "w1", 60)
        store.record_failure(engine, missing, "w1", "404", "download failed", "E404")
    finally:
        engine.dispose()
    return {"IMGMOD_DATABASE_URL": sqlite_url, "IMGMOD_BROKER_URL": "redis://127.0.0.1:9/0"}


def imgmod(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_status_counts_the_job_s_rows_by_state(env: dict[str, str]) -> None:
    out = imgmod(env, "status", JOB, "--json")

    assert out.exit_code == 0, out.output
    status = json.loads(out.stdout)
    assert status["job"] == JOB and status["service"] == "baselineCheck_global"
    assert {k: v for k, v in status["states"].items() if v} == {
        "done": 1,
        "failed": 1,
        "rejected": 1,
    }


def test_export_writes_every_row_in_line_order_as_jsonl_and_csv(env: dict[str, str]) -> None:
    jsonl = imgmod(env, "export", JOB, "--format", "jsonl")
    table = imgmod(env, "export", JOB, "--format", "csv")

    assert jsonl.exit_code == 0 and table.exit_code == 0, jsonl.output + table.output
    records = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert [(r["line"], r["status"], r["code"]) for r in records] == [
        (1, "done", "200"),
        (2, "failed", "404"),
        (3, "rejected", None),
    ]
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    assert [(row["line"], row["status"], row["code"]) for row in rows] == [
        ("1", "done", "200"),
        ("2", "failed", "404"),
        ("3", "rejected", ""),
    ]


def test_report_counts_billable_calls_and_failures_by_code(env: dict[str, str]) -> None:
    out = imgmod(env, "report", JOB, "--json")

    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["billable_calls"] == 1
    assert report["failures_by_code"] == {"404": 1}
    assert imgmod(env, "report", JOB).exit_code == 0  # and as text


@pytest.mark.parametrize("command", [["status"], ["export", JOB], ["report", JOB]])
def test_a_bad_setting_is_one_line_naming_it_and_exit_2(
    env: dict[str, str], command: list[str]
) -> None:
    out = imgmod({**env, "IMGMOD_QPS": "fast"}, *command)

    assert out.exit_code == 2, out.output
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert "IMGMOD_QPS" in lines[0] and "Traceback" not in out.output
    assert out.stdout == ""


def test_an_unknown_job_is_one_line_naming_the_jobs_there_are(env: dict[str, str]) -> None:
    out = imgmod(env, "report", "nightly")

    assert out.exit_code == 2, out.output
    assert out.stderr.strip().splitlines() == ["Error: no job named 'nightly' (jobs: archive)"]
