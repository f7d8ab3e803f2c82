"""``imgmod decide`` and ``imgmod history`` on SQLite and PostgreSQL: decisions from stored
answers (no API call), unscanned rows never passed, append-only decisions and events, new
policy versions reporting their changes, reviewers' decisions kept, export fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support import run_imgmod
from worker import history, reports, store
from worker.decide import VersionReused, decide_job, load_policy
from worker.policy import parse_policy
from worker.results import parse_response

pytestmark = pytest.mark.service

VENDOR = Path(__file__).resolve().parent.parent / "data" / "vendor"

# Version 2 of a policy: custom image hits go to review, everything high is blocked otherwise.
V2 = """\
name = "default"
version = "2"

[[rules]]
name = "library-hit"
custom_image = true
decision = "review"
priority = 90

[[rules]]
name = "high-risk"
risk_level = "high"
decision = "block"

[[rules]]
name = "rest"
decision = "pass"
"""


def answer(name: str):
    return parse_response((VENDOR / name).read_text(encoding="utf-8"), http_status=200)


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
        last_error="line 7: imageUrl: is not an absolute URL" if rejected else None,
        raw_input="not a url" if rejected else None,
    )


@pytest.fixture
def job(engine) -> store.Job:
    """Lines: high risk, no risk, custom-image hit (high), failed 405, failed 404, queued,
    rejected."""
    job = store.get_or_create_job(engine, "archive", "baselineCheck_global", "customImage")
    ids = sorted(store.insert_items(engine, job.id, [new_item(n) for n in range(1, 7)]))
    store.insert_items(engine, job.id, [new_item(7, "rejected")])
    for item_id, name in zip(
        ids,
        ("response_risk_detected.json", "response_no_risk.json", "response_custom_image_hit.json"),
        strict=False,
    ):
        store.claim_item(engine, item_id, "w1", 60)
        store.record_result(engine, item_id, "w1", job.service, answer(name))
    for item_id, code in ((ids[3], "405"), (ids[4], "404")):
        store.claim_item(engine, item_id, "w1", 60)
        store.record_failure(engine, item_id, "w1", code, "download failed", f"E{code}")
    store.mark_queued(engine, [ids[5]])
    return job


def _all(engine, job, **kw) -> list[store.Decision]:
    found, after = [], 0
    while page := store.latest_decisions(engine, job.id, after_item_id=after, limit=2, **kw):
        found += page
        after = page[-1].item_id
    return found


def _count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_every_item_is_decided_and_rows_without_an_answer_are_unscanned(engine, job):
    out = decide_job(engine, job, load_policy(None), "alice")
    current = _all(engine, job)
    assert [d.decision for d in current] == [
        "block",  # high
        "pass",  # none
        "block",  # custom image hit, high
        "unscanned",  # failed 405
        "unscanned",  # failed 404
        "unscanned",  # queued
        "unscanned",  # rejected
    ]
    assert (out.items, out.first, out.written, dict(out.changes)) == (7, 7, 7, {})
    assert [d.rule for d in current[:3]] == ["high-risk", "low-or-no-risk", "high-risk"]
    first = current[0]
    assert (first.policy_name, first.policy_version, first.source, first.actor) == (
        "default",
        "1",
        "policy",
        "alice",
    )
    assert first.policy_hash == load_policy(None).content_hash
    assert "state failed, last code 405" in (current[3].reason or "")
    assert store.decision_counts(engine, job.id) == {"block": 2, "pass": 1, "unscanned": 4}
    assert [d.item_id for d in _all(engine, job, decision="unscanned")] == [
        d.item_id for d in current[3:]
    ]
    # every decision is an event: kind decision, the actor, no "before" the first time
    logged = store.job_events(engine, job.id, kinds=("decision",))
    assert len(logged) == 7
    assert {(e.actor, e.policy_version, e.before is None) for e in logged} == {("alice", "1", True)}
    assert [e.after["decision"] for e in logged] == [d.decision for d in current]


def test_a_rerun_writes_nothing_and_a_new_version_keeps_the_old_decisions(engine, job):
    default = load_policy(None)
    decide_job(engine, job, default, "alice")
    assert decide_job(engine, job, default, "alice").written == 0
    assert _count(engine, store.decisions) == 7

    v2 = parse_policy(V2, "v2.toml")
    dry = decide_job(engine, job, v2, "bob", dry_run=True)
    assert dict(dry.changes) == {("block", "review"): 1}
    assert _count(engine, store.decisions) == 7  # the dry run wrote nothing

    out = decide_job(engine, job, v2, "bob")
    assert dict(out.changes) == {("block", "review"): 1}
    # every item gets a row naming version 2 (same decision or not); the old rows stay
    assert out.written == 7 and _count(engine, store.decisions) == 14
    current = _all(engine, job)
    assert {d.policy_version for d in current} == {"2"}
    assert current[2].decision == "review" and current[2].priority == 90
    history_of_hit = store.item_decisions(engine, current[2].item_id)
    assert [(d.decision, d.policy_version) for d in history_of_hit] == [
        ("block", "1"),
        ("review", "2"),
    ]
    changed = [e for e in store.item_events(engine, current[2].item_id) if e.kind == "decision"]
    assert changed[-1].before["decision"] == "block" and changed[-1].after["decision"] == "review"
    assert changed[-1].actor == "bob"
    assert store.decisions_by_policy(engine, job.id)[0][:2] == ("default", "1")

    # version 2 again with other rules: refused before anything is written
    edited = parse_policy(V2.replace("priority = 90", "priority = 80"), "v2.toml")
    with pytest.raises(VersionReused, match="raise `version`"):
        decide_job(engine, job, edited, "bob")
    assert decide_job(engine, job, edited, "bob", dry_run=True).version_reused
    assert _count(engine, store.decisions) == 14


def test_a_reviewers_decision_is_kept_by_a_later_policy_run(engine, job):
    decide_job(engine, job, load_policy(None), "alice")
    hit = _all(engine, job)[2]
    store.record_decisions(
        engine,
        [store.NewDecision(hit.item_id, job.id, "pass", "review", "carol", reason="a known logo")],
    )
    out = decide_job(engine, job, parse_policy(V2, "v2.toml"), "bob")
    assert out.kept_reviews == 1
    assert store.current_decisions(engine, [hit.item_id])[hit.item_id].actor == "carol"
    reviewed = [e for e in store.item_events(engine, hit.item_id) if e.kind == "review"]
    assert reviewed[0].before["decision"] == "block" and reviewed[0].after["decision"] == "pass"


def test_export_carries_the_current_decision_and_filters_by_it(engine, job):
    decide_job(engine, job, load_policy(None), "alice")
    decide_job(engine, job, parse_policy(V2, "v2.toml"), "bob")
    records = list(reports.export_records(engine, job, reports.ExportFilter(), batch=3))
    assert all(tuple(r) == reports.EXPORT_FIELDS for r in records)
    assert [r["decision"] for r in records] == ["block", "pass", "review"] + ["unscanned"] * 4
    assert {(r["policy"], r["policy_version"]) for r in records} == {("default", "2")}
    blocked = reports.export_records(engine, job, reports.ExportFilter(decisions=("review",)))
    assert [r["line"] for r in blocked] == [3]


def test_history_tells_one_image_s_story_in_time_order(engine, job):
    decide_job(engine, job, load_policy(None), "alice")
    decide_job(engine, job, parse_policy(V2, "v2.toml"), "bob")
    (story,) = history.image_history(engine, "https://e.com/3.jpg")
    whats = [step.what for step in story.steps]
    assert whats[:2] == ["enqueued", "answered"]
    assert whats[2:] == ["decision: block", "decision: review"]
    assert "pornographic_adultContent_lib" in story.steps[1].detail
    assert story.steps[3].actor == "bob" and "block → review" in story.steps[3].detail
    (failed,) = history.image_history(engine, "d4", job)
    assert [s.what for s in failed.steps] == ["enqueued", "failed"] + ["decision: unscanned"] * 2
    assert "code 405" in failed.steps[1].detail
    with pytest.raises(history.UnknownReference):
        history.image_history(engine, "https://e.com/none.jpg")


def test_imgmod_decide_refuses_a_bad_policy_in_one_line_then_decides(sqlite_url, tmp_path):
    engine = store.ensure_schema(sqlite_url)
    job = store.get_or_create_job(engine, "cli", "baselineCheck_global", "")
    (item_id,) = store.insert_items(engine, job.id, [new_item(1)])
    store.claim_item(engine, item_id, "w1", 60)
    store.record_result(engine, item_id, "w1", job.service, answer("response_risk_detected.json"))
    env = {"IMGMOD_DATABASE_URL": sqlite_url}

    bad = tmp_path / "bad.toml"
    bad.write_text(V2.replace('decision = "block"', "decision = 'quarantine'"))
    refused = run_imgmod(env, "decide", "cli", "--policy", str(bad))
    assert refused.returncode == 2, refused.stderr
    assert f"{bad}, line 13: rules[2].decision: 'quarantine' is not a decision" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
    assert _count(engine, store.decisions) == 0

    done = run_imgmod(env, "decide", "cli", "--user", "dave", "--json", check=True)
    assert json.loads(done.stdout)["decisions"]["block"] == 1
    assert store.latest_decisions(engine, job.id)[0].actor == "dave"


def test_appended_events_come_back_in_order_and_an_unknown_kind_is_refused(engine, job):
    item_id = _first_item(engine, job)
    ids = store.append_events(
        engine,
        [
            store.NewEvent("action", "erin", "freeze", job.id, item_id, after={"acl": "private"}),
            store.NewEvent(
                "restore", "erin", "unfreeze", job.id, item_id, before={"acl": "private"}
            ),
        ],
    )
    assert ids == sorted(ids) and len(ids) == 2
    one = store.append_event(
        engine, store.NewEvent("webhook", "imgmod", "delivered", job.id, item_id)
    )
    assert one > ids[-1]
    assert [e.what for e in store.item_events(engine, item_id)] == [
        "freeze",
        "unfreeze",
        "delivered",
    ]
    assert [e.id for e in store.job_events(engine, job.id, kinds=("action", "restore"))] == ids
    assert [e.id for e in store.job_events(engine, job.id, after_id=ids[0], limit=1)] == [ids[1]]
    with pytest.raises(ValueError, match="unknown event kind"):
        store.append_event(engine, store.NewEvent("rename", "erin", "x", job.id, item_id))
    story = store.item_history(engine, item_id)
    assert story is not None and story.answer is not None and len(story.events) == 3


def _first_item(engine, job) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.min(store.items.c.id)).where(store.items.c.job_id == job.id)
        ).scalar_one()
