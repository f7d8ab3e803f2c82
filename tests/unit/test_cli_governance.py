"""``imgmod decide``, ``export --decision`` and ``imgmod history`` in-process (click's
CliRunner) against a SQLite file whose rows were written through the store API: what each
prints, and the one-line refusals. The subprocess run is in tests/integration/test_decide.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from worker import store
from worker.cli import main
from worker.results import parse_response

VENDOR = Path(__file__).resolve().parents[1] / "data" / "vendor"
MEDIUM_BLOCKS = """\
name = "strict"
version = "2"

[[rules]]
name = "risky"
risk_level = ["high", "medium"]
decision = "block"

[[rules]]
name = "rest"
decision = "pass"
"""


@pytest.fixture
def env(sqlite_url: str) -> dict[str, str]:
    """Job ``archive``: line 1 answered (high risk), line 2 answered (no risk), line 3 failed."""
    store.upgrade(sqlite_url)
    engine = store.make_engine(sqlite_url)
    try:
        job = store.get_or_create_job(engine, "archive", "baselineCheck_global", "")
        rows = [
            store.NewItem(
                kind="url",
                ref_key=f"https://e.com/{n}.jpg",
                image_url=f"https://e.com/{n}.jpg",
                oss_bucket=None,
                oss_object=None,
                oss_region=None,
                data_id=f"d{n}",
                referer=None,
                source="in.txt",
                line=n,
                state="pending",
            )
            for n in (1, 2, 3)
        ]
        high, clean, failed = sorted(store.insert_items(engine, job.id, rows))
        for item_id, name in (
            (high, "response_risk_detected.json"),
            (clean, "response_no_risk.json"),
        ):
            body = (VENDOR / name).read_text(encoding="utf-8")
            store.claim_item(engine, item_id, "w1", 60)
            store.record_result(engine, item_id, "w1", job.service, parse_response(body, 200))
        store.claim_item(engine, failed, "w1", 60)
        store.record_failure(engine, failed, "w1", "404", "download failed", "E404")
    finally:
        engine.dispose()
    return {"IMGMOD_DATABASE_URL": sqlite_url, "USER": "erin", "LOGNAME": "erin"}


def imgmod(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_decide_prints_the_verdicts_and_a_dry_run_writes_nothing(env, tmp_path):
    dry = imgmod(env, "decide", "archive", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "policy default version 1" in dry.stdout
    assert "decisions: 1 block, 1 pass, 1 unscanned" in dry.stdout
    assert "dry run: nothing written (3 decisions would be)" in dry.stdout
    assert imgmod(env, "export", "archive", "--decision", "block").stdout == ""

    first = imgmod(env, "decide", "archive")
    assert "written: 3 decisions" in first.stdout and "0 API calls" in first.stdout
    again = imgmod(env, "decide", "archive")
    assert "written: 0 decisions" in again.stdout and "changes:   none" in again.stdout

    strict = tmp_path / "strict.toml"
    strict.write_text(MEDIUM_BLOCKS)
    # the no-risk image stays pass; nothing changes decision, but every row names version 2
    out = imgmod(env, "decide", "archive", "--policy", str(strict), "--json")
    outcome = json.loads(out.stdout)
    assert (outcome["policy"], outcome["policy_version"], outcome["written"]) == ("strict", "2", 3)
    assert outcome["changes"] == []


def test_export_adds_the_decision_fields_and_filters_by_decision(env):
    imgmod(env, "decide", "archive", "--user", "frank")
    lines = imgmod(env, "export", "archive").stdout.splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["line"], r["decision"], r["policy"], r["policy_version"]) for r in records] == [
        (1, "block", "default", "1"),
        (2, "pass", "default", "1"),
        (3, "unscanned", "default", "1"),
    ]
    csv_out = imgmod(env, "export", "archive", "--format", "csv", "--decision", "unscanned,pass")
    header, *rows = csv_out.stdout.splitlines()
    assert header.endswith(",decision,policy,policy_version") and len(rows) == 2
    wrong = imgmod(env, "export", "archive", "--decision", "maybe")
    assert wrong.exit_code == 2 and "'maybe' is not a decision" in wrong.output


def test_history_prints_one_image_s_story_with_who_decided(env):
    imgmod(env, "decide", "archive")
    told = imgmod(env, "history", "https://e.com/1.jpg", "--job", "archive")
    assert told.exit_code == 0, told.output
    lines = told.stdout.splitlines()
    assert lines[0] == "https://e.com/1.jpg in job archive (item 1, now done)"
    assert [line.split()[2] for line in lines[1:]] == ["enqueued:", "answered:", "decision:"]
    assert "decision: block by erin: none → block; policy default v1; rule high-risk" in told.stdout
    as_json = json.loads(imgmod(env, "history", "d3", "--json").stdout)
    assert [step["what"] for step in as_json[0]["steps"]] == [
        "enqueued",
        "failed",
        "decision: unscanned",
    ]
    missing = imgmod(env, "history", "https://e.com/9.jpg")
    assert (
        missing.exit_code == 2 and "no reference 'https://e.com/9.jpg' in any job" in missing.output
    )


def test_a_policy_file_that_cannot_be_read_is_one_line(env, tmp_path):
    out = imgmod(env, "decide", "archive", "--policy", str(tmp_path / "none.toml"))
    assert out.exit_code == 2
    assert "none.toml: cannot read it (No such file or directory)" in out.output


def test_the_queries_in_docs_tables_run_and_agree_with_the_store(env):
    import re

    import sqlalchemy as sa

    imgmod(env, "decide", "archive")
    text = (Path(__file__).resolve().parents[2] / "docs" / "tables.md").read_text()
    queries = re.findall(r"```sql\n(.*?)```", text, flags=re.S)
    assert len(queries) == 6
    engine = store.make_engine(env["IMGMOD_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            found = [
                conn.execute(sa.text(q.replace("'nightly'", "'archive'"))).all() for q in queries
            ]
        current, counts = found[1], found[2]
        assert sorted(row.decision for row in current) == ["block", "pass", "unscanned"]
        job = store.get_job(engine, "archive")
        assert job is not None
        assert dict(counts) == store.decision_counts(engine, job.id)
    finally:
        engine.dispose()
