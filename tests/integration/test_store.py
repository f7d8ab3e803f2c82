"""worker.store on SQLite and PostgreSQL: dedup, leases, idempotent results, state rules."""

from __future__ import annotations

import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from worker import store
from worker.results import parse_response
from worker.store import sql

pytestmark = pytest.mark.service

VENDOR = Path(__file__).resolve().parent.parent / "data" / "vendor"


def vendor_response(name: str = "response_risk_detected.json"):
    return parse_response((VENDOR / name).read_text(encoding="utf-8"), http_status=200)


@pytest.fixture
def job(engine) -> store.Job:
    return store.get_or_create_job(engine, "job-1", "baselineCheck_global", "textInImage")


def url_item(n: int, **overrides) -> store.NewItem:
    fields = dict(
        kind="url",
        ref_key=f"https://example.com/{n}.jpg",
        image_url=f"https://example.com/{n}.jpg",
        oss_bucket=None,
        oss_object=None,
        oss_region=None,
        data_id=f"d{n}",
        referer=None,
        source="in.txt",
        line=n,
        state="pending",
    )
    fields.update(overrides)
    return store.NewItem(**fields)


def rejected_item(line: int, raw: str = "garbage") -> store.NewItem:
    return store.NewItem(
        kind="invalid",
        ref_key=store.rejected_ref_key("in.txt", line),
        image_url=None,
        oss_bucket=None,
        oss_object=None,
        oss_region=None,
        data_id=None,
        referer=None,
        source="in.txt",
        line=line,
        state="rejected",
        last_error=f"line {line}: imageUrl: bad",
        raw_input=raw,
    )


def one_item(engine, job, n: int = 1) -> int:
    (item_id,) = store.insert_items(engine, job.id, [url_item(n)])
    return item_id


def item_row(engine, item_id: int):
    with engine.connect() as conn:
        return conn.execute(sa.select(store.items).where(store.items.c.id == item_id)).one()


def count(engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


# --------------------------------------------------------------------------- jobs


def test_get_or_create_job_returns_the_same_job_and_refuses_other_settings(engine, job):
    again = store.get_or_create_job(engine, "job-1", "baselineCheck_global", "textInImage")
    assert again.id == job.id
    assert job.created_at.tzinfo is not None and job.finished_at is None
    with pytest.raises(ValueError, match="service is 'baselineCheck_global'"):
        store.get_or_create_job(engine, "job-1", "aigcDetector_global", "textInImage")
    with pytest.raises(ValueError, match="info_type is 'textInImage', not ''"):
        store.get_or_create_job(engine, "job-1", "baselineCheck_global", "")
    assert store.get_job(engine, "job-1") == job
    assert store.get_job(engine, "nope") is None
    store.get_or_create_job(engine, "job-2", "aigcDetector_global", "", referer="r.example")
    assert [j.name for j in store.list_jobs(engine)] == ["job-1", "job-2"]


def test_add_counts_accumulates_producer_counters(engine, job):
    store.add_counts(engine, job.id, total_lines=10, accepted=7, duplicates=2, rejected=1)
    store.add_counts(engine, job.id, total_lines=5, accepted=5)
    got = store.get_job(engine, job.name)
    assert (got.total_lines, got.accepted, got.duplicates, got.rejected) == (15, 12, 2, 1)


# --------------------------------------------------------------------------- items


def test_insert_items_skips_duplicates_and_returns_only_new_ids(engine, job):
    first = store.insert_items(engine, job.id, [url_item(1), url_item(2), rejected_item(3)])
    assert len(first) == 3
    second = store.insert_items(engine, job.id, [url_item(2), url_item(4), rejected_item(3)])
    assert len(second) == 1
    assert item_row(engine, second[0]).ref_key == "https://example.com/4.jpg"
    assert count(engine, store.items) == 4
    # a duplicate inside one batch is also stored once
    assert len(store.insert_items(engine, job.id, [url_item(5), url_item(5)])) == 1
    # the same reference in another job is a new item
    other = store.get_or_create_job(engine, "job-2", "baselineCheck_global", "")
    assert len(store.insert_items(engine, other.id, [url_item(1)])) == 1


def test_insert_items_keeps_at_most_2000_characters_of_a_rejected_line(engine, job):
    (item_id,) = store.insert_items(engine, job.id, [rejected_item(1, raw="z" * 5000)])
    row = item_row(engine, item_id)
    assert (row.state, len(row.raw_input), row.last_error) == (
        "rejected",
        2000,
        "line 1: imageUrl: bad",
    )


def test_insert_items_in_bulk(engine, job):
    ids = store.insert_items(engine, job.id, [url_item(n) for n in range(2500)])
    assert len(ids) == len(set(ids)) == 2500
    assert store.state_counts(engine, job.id)["pending"] == 2500


def test_mark_queued_moves_only_pending_items(engine, job):
    a, b = store.insert_items(engine, job.id, [url_item(1), url_item(2)])
    assert store.claim_item(engine, b, "w1", 60) is not None
    store.mark_queued(engine, [a, b])
    assert item_row(engine, a).state == "queued"
    assert item_row(engine, a).queued_at is not None
    assert item_row(engine, b).state == "running"


# --------------------------------------------------------------------------- claims


def test_claim_item_leases_and_carries_the_job_settings(engine, job):
    item_id = one_item(engine, job)
    claimed = store.claim_item(engine, item_id, "w1", 60)
    assert claimed is not None
    assert (claimed.id, claimed.job_id, claimed.kind, claimed.attempts) == (
        item_id,
        job.id,
        "url",
        1,
    )
    assert (claimed.service, claimed.info_type) == ("baselineCheck_global", "textInImage")
    assert claimed.ref.image_url == "https://example.com/1.jpg" and claimed.ref.data_id == "d1"
    row = item_row(engine, item_id)
    assert (row.state, row.lease_owner) == ("running", "w1")
    assert row.lease_expires_at > row.updated_at


def test_a_claim_carries_the_settings_of_its_own_job_among_several(engine, job):
    other = store.get_or_create_job(engine, "job-2", "aigcDetector_global", "")
    mine, theirs = one_item(engine, job, 1), one_item(engine, other, 2)
    claimed = {i: store.claim_item(engine, i, "w1", 60) for i in (theirs, mine)}
    assert (claimed[mine].service, claimed[mine].info_type) == (job.service, job.info_type)
    assert (claimed[theirs].service, claimed[theirs].info_type) == ("aigcDetector_global", "")
    assert claimed[mine].job_key == store.job_key(job.id, job.name, job.created_at)
    assert claimed[mine].job_key != claimed[theirs].job_key


def test_a_recreated_database_at_the_same_url_gives_its_own_job_settings(database_url, engine):
    """Nothing about a job is remembered between claims: the same URL and job id may be
    another job after the database was recreated (a fresh SQLite file, a restored dump)."""
    first = store.get_or_create_job(engine, "before", "baselineCheck_global", "textInImage")
    before = store.claim_item(engine, one_item(engine, first), "w1", 60)
    with engine.begin() as conn:
        store.metadata.drop_all(conn)
        conn.execute(sa.text("DROP TABLE alembic_version"))
    store.upgrade(database_url)
    second = store.get_or_create_job(engine, "after", "aigcDetector_global", "")
    assert second.id == first.id  # the id repeats: only the job's name and creation tell
    after = store.claim_item(engine, one_item(engine, second), "w1", 60)
    assert (after.service, after.info_type) == ("aigcDetector_global", "")
    assert after.job_key == store.job_key(second.id, "after", second.created_at)
    assert after.job_key != before.job_key


def test_two_workers_racing_for_the_same_items_each_item_is_claimed_once(engine, job):
    ids = store.insert_items(engine, job.id, [url_item(n) for n in range(40)])
    start = threading.Barrier(4)
    wins: dict[str, list[int]] = {}

    def race(owner: str) -> None:
        start.wait()
        wins[owner] = [i for i in ids if store.claim_item(engine, i, owner, 60) is not None]

    threads = [threading.Thread(target=race, args=(f"w{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    claimed = sorted(i for won in wins.values() for i in won)
    assert claimed == sorted(ids)
    with engine.connect() as conn:
        attempts = conn.execute(sa.select(sa.func.max(store.items.c.attempts))).scalar_one()
    assert attempts == 1


def test_overlapping_batches_racing_each_item_is_claimed_once(engine, job):
    ids = store.insert_items(engine, job.id, [url_item(n) for n in range(48)])
    start = threading.Barrier(4)
    wins: dict[str, list[int]] = {}

    def race(owner: str, offset: int) -> None:
        start.wait()  # each owner claims 8 ids at a time, half of them also in another's batch
        batches = [ids[i : i + 8] for i in range(offset, len(ids), 4)]
        got = [c.id for batch in batches for c in store.claim_items(engine, batch, owner, 60)]
        wins[owner] = got

    threads = [threading.Thread(target=race, args=(f"w{n}", n % 2 * 2)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    claimed = sorted(i for won in wins.values() for i in won)
    assert claimed == sorted(ids)
    with engine.connect() as conn:
        attempts = conn.execute(sa.select(sa.func.max(store.items.c.attempts))).scalar_one()
    assert attempts == 1


def test_a_batch_claim_returns_the_claimable_rows_in_the_order_asked(engine, job):
    a, b, c, d = store.insert_items(engine, job.id, [url_item(n) for n in range(4)])
    assert store.claim_item(engine, b, "other", 60) is not None  # leased elsewhere
    claimed = store.claim_items(engine, [d, b, a, 999_999, c, d], "w1", 60)
    assert [item.id for item in claimed] == [d, a, c]
    assert {item.job_key for item in claimed} == {claimed[0].job_key}
    assert store.claim_items(engine, [], "w1", 60) == []


def test_a_leased_item_cannot_be_claimed_by_another_worker(engine, job):
    item_id = one_item(engine, job)
    assert store.claim_item(engine, item_id, "w1", 60) is not None
    assert store.claim_item(engine, item_id, "w2", 60) is None
    assert store.claim_item(engine, item_id, "w1", 60) is None  # not even by the same owner


def test_an_expired_lease_can_be_claimed_again(engine, job):
    item_id = one_item(engine, job)
    assert store.claim_item(engine, item_id, "w1", -1) is not None  # expired at once
    again = store.claim_item(engine, item_id, "w2", 60)
    assert again is not None and again.attempts == 2
    assert item_row(engine, item_id).lease_owner == "w2"
    assert store.extend_lease(engine, item_id, "w1", 60) is False
    assert store.extend_lease(engine, item_id, "w2", 60) is True


def test_done_failed_and_rejected_items_cannot_be_claimed(engine, job):
    done, failed = store.insert_items(engine, job.id, [url_item(1), url_item(2)])
    (rejected,) = store.insert_items(engine, job.id, [rejected_item(3)])
    store.claim_item(engine, done, "w1", 60)
    store.record_result(engine, done, "w1", job.service, vendor_response())
    store.claim_item(engine, failed, "w1", 60)
    store.record_failure(engine, failed, "w1", "401", "bad", "BadRequest")
    for item_id in (done, failed, rejected):
        assert store.claim_item(engine, item_id, "w2", 60) is None
    assert store.claim_item(engine, 999_999, "w2", 60) is None


# --------------------------------------------------------------------------- results


def test_record_result_stores_the_answer_its_labels_and_marks_the_item_done(engine, job):
    item_id = one_item(engine, job)
    store.claim_item(engine, item_id, "w1", 60)
    assert store.record_result(engine, item_id, "w1", job.service, vendor_response()) is True
    row = item_row(engine, item_id)
    assert (row.state, row.last_code, row.last_message, row.lease_owner) == (
        "done",
        "200",
        "OK",
        None,
    )
    assert row.finished_at is not None
    with engine.connect() as conn:
        result = conn.execute(sa.select(store.results)).one()
        labels = conn.execute(
            sa.select(store.result_labels.c.label, store.result_labels.c.confidence).order_by(
                store.result_labels.c.id
            )
        ).all()
    assert (result.job_id, result.code, result.risk_level, result.data_id) == (
        job.id,
        "200",
        "high",
        "img123****",
    )
    assert result.request_id == "ABCD1234-1234-1234-1234-1234XYZ"
    assert result.raw["Data"]["Result"][0]["Label"] == "pornographic_adultContent"
    assert labels == [
        ("pornographic_adultContent", 81.0),
        ("sexual_partialNudity", 98.0),
        ("violent_explosion", 70.0),
        ("violent_explosion_lib", 81.0),
    ]


def test_record_result_twice_stores_one_result_and_one_set_of_labels(engine, job):
    item_id = one_item(engine, job)
    store.claim_item(engine, item_id, "w1", 60)
    assert store.record_result(engine, item_id, "w1", job.service, vendor_response()) is True
    assert store.record_result(engine, item_id, "w2", job.service, vendor_response()) is False
    assert count(engine, store.results) == 1
    assert count(engine, store.result_labels) == 4


def test_record_result_keeps_a_billed_answer_after_the_lease_was_taken_over(engine, job):
    item_id = one_item(engine, job)
    store.claim_item(engine, item_id, "slow", -1)
    store.claim_item(engine, item_id, "fast", 60)
    ext = vendor_response("response_custom_image_hit.json")
    assert store.record_result(engine, item_id, "slow", job.service, ext) is True
    assert item_row(engine, item_id).state == "done"
    with engine.connect() as conn:
        stored_ext = conn.execute(sa.select(store.results.c.ext)).scalar_one()
    assert stored_ext["CustomImage"][0]["LibId"] == "TEST20240307"
    assert store.record_result(engine, item_id, "fast", job.service, ext) is False


def test_concurrent_record_result_stores_exactly_one(engine, job):
    item_id = one_item(engine, job)
    start = threading.Barrier(4)
    outcomes: list[bool] = []

    def finish(owner: str) -> None:
        start.wait()
        outcomes.append(store.record_result(engine, item_id, owner, job.service, vendor_response()))

    threads = [threading.Thread(target=finish, args=(f"w{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes) == [False, False, False, True]
    assert count(engine, store.results) == 1
    assert count(engine, store.result_labels) == 4


def test_record_result_for_a_missing_item_raises(engine, job):
    with pytest.raises(LookupError, match="item 424242"):
        store.record_result(engine, 424242, "w1", job.service, vendor_response())


def test_a_no_risk_answer_stores_its_label_without_confidence(engine, job):
    item_id = one_item(engine, job)
    store.record_result(
        engine, item_id, "w1", job.service, vendor_response("response_no_risk.json")
    )
    with engine.connect() as conn:
        label = conn.execute(sa.select(store.result_labels)).one()
    assert (label.label, label.confidence) == ("nonLabel", None)


# --------------------------------------------------------------------------- retries, failures


def test_record_retry_requeues_only_for_the_owner_of_a_running_item(engine, job):
    item_id = one_item(engine, job)
    store.claim_item(engine, item_id, "w1", 60)
    assert store.record_retry(engine, item_id, "w2", "Throttling.User", "slow down", "x") is False
    assert item_row(engine, item_id).state == "running"
    assert store.record_retry(engine, item_id, "w1", "403", "slow down", "Throttled") is True
    row = item_row(engine, item_id)
    assert (row.state, row.lease_owner, row.lease_expires_at) == ("queued", None, None)
    assert (row.last_code, row.last_message, row.last_error) == ("403", "slow down", "Throttled")
    # and the item can be claimed again
    assert store.claim_item(engine, item_id, "w2", 60).attempts == 2


def test_record_failure_is_terminal_but_never_overrides_done(engine, job):
    failing, finished = store.insert_items(engine, job.id, [url_item(1), url_item(2)])
    store.claim_item(engine, failing, "w1", 60)
    assert store.record_failure(engine, failing, "w1", "404", "download failed", "e") is True
    row = item_row(engine, failing)
    assert (row.state, row.last_code, row.lease_owner) == ("failed", "404", None)
    assert row.finished_at is not None
    store.claim_item(engine, finished, "w1", 60)
    store.record_result(engine, finished, "w1", job.service, vendor_response())
    assert store.record_failure(engine, finished, "w1", "500", "boom", "e") is False
    assert item_row(engine, finished).state == "done"


def test_record_failure_leaves_an_item_leased_to_another_worker_alone(engine, job):
    item_id = one_item(engine, job)
    store.claim_item(engine, item_id, "old", -1)
    store.claim_item(engine, item_id, "new", 60)
    assert store.record_failure(engine, item_id, "old", "405", "timeout", "e") is False
    assert item_row(engine, item_id).state == "running"


def test_reset_failed_reopens_failed_items_optionally_by_code_and_reopens_the_job(engine, job):
    ids = store.insert_items(engine, job.id, [url_item(n) for n in range(3)])
    for item_id, code in zip(ids, ("404", "405", "405"), strict=True):
        store.claim_item(engine, item_id, "w1", 60)
        store.record_failure(engine, item_id, "w1", code, None, "e")
    assert store.finish_job_if_complete(engine, job.id) is True
    assert store.reset_failed(engine, job.id, code="405") == ids[1:]
    assert item_row(engine, ids[1]).attempts == 0
    assert store.get_job(engine, job.name).finished_at is None
    assert store.state_counts(engine, job.id)["failed"] == 1
    assert store.reset_failed(engine, job.id) == ids[:1]
    assert store.reset_failed(engine, job.id) == []


# --------------------------------------------------------------------------- progress


def test_state_counts_lists_every_state(engine, job):
    a, b, c = store.insert_items(engine, job.id, [url_item(1), url_item(2), url_item(3)])
    store.insert_items(engine, job.id, [rejected_item(9)])
    store.mark_queued(engine, [b])
    store.claim_item(engine, c, "w1", 60)
    assert store.state_counts(engine, job.id) == {
        "pending": 1,
        "queued": 1,
        "running": 1,
        "done": 0,
        "failed": 0,
        "rejected": 1,
        "paused": 0,  # waiting on a budget (worker.budget)
    }


def test_expired_or_stuck_ids_finds_pending_queued_and_expired_work_in_batches(engine, job):
    ids = store.insert_items(engine, job.id, [url_item(n) for n in range(7)])
    pending, queued, live, expired, done, failed, also_pending = sorted(ids)
    store.mark_queued(engine, [queued])
    store.claim_item(engine, live, "w1", 60)
    store.claim_item(engine, expired, "w1", -1)
    store.record_result(engine, done, "w1", job.service, vendor_response())
    store.claim_item(engine, failed, "w1", 60)
    store.record_failure(engine, failed, "w1", "401", None, None)
    batches = list(store.expired_or_stuck_ids(engine, job.id, batch=2))
    assert batches == [[pending, queued], [expired, also_pending]]
    flat = [i for b in store.expired_or_stuck_ids(engine, job.id, include_queued=False) for i in b]
    assert flat == [pending, expired, also_pending]


def test_finish_job_if_complete_waits_for_open_items(engine, job):
    item_id = one_item(engine, job)
    store.insert_items(engine, job.id, [rejected_item(5)])
    assert store.finish_job_if_complete(engine, job.id) is False
    store.claim_item(engine, item_id, "w1", 60)
    assert store.finish_job_if_complete(engine, job.id) is False
    store.record_result(engine, item_id, "w1", job.service, vendor_response())
    assert store.finish_job_if_complete(engine, job.id) is True
    first = store.get_job(engine, job.name).finished_at
    assert store.finish_job_if_complete(engine, job.id) is True
    assert store.get_job(engine, job.name).finished_at == first


def test_the_label_query_can_use_the_label_index_on_postgresql(pg_url):
    store.upgrade(pg_url)
    engine = store.make_engine(pg_url)
    job = store.get_or_create_job(engine, "job-1", "baselineCheck_global", "")
    item_id = one_item(engine, job)
    store.record_result(engine, item_id, "w1", job.service, vendor_response())
    with engine.connect() as conn:
        conn.exec_driver_sql("SET enable_seqscan = off")  # a tiny table would be scanned anyway
        plan = "\n".join(
            conn.exec_driver_sql(
                "EXPLAIN SELECT item_id FROM result_labels "
                "WHERE job_id = 1 AND label = 'violent_explosion' AND confidence >= 60"
            ).scalars()
        )
    assert "ix_result_labels_job_id_label_confidence" in plan
    engine.dispose()


def test_an_odd_answer_with_overlong_fields_is_still_stored(engine, job):
    item_id = one_item(engine, job)
    body = {
        "Code": "X" * 300,
        "Msg": "m" * 5000,
        "RequestId": "R" * 300,
        "Data": {"RiskLevel": "catastrophic" * 3, "Result": [{"Label": "L" * 500}]},
    }
    assert store.record_result(engine, item_id, "w1", job.service, parse_response(body)) is True
    with engine.connect() as conn:
        result = conn.execute(sa.select(store.results)).one()
        label = conn.execute(sa.select(store.result_labels)).one()
    assert (len(result.code), len(result.request_id), len(result.msg)) == (64, 128, 5000)
    assert result.raw == body  # the raw body keeps everything
    assert len(label.label) == 128
    assert len(item_row(engine, item_id).last_code) == 64


# --------------------------------------------------------------------------- the database's clock


def pretend_host_clock(monkeypatch, moment: datetime) -> None:
    """This host's clock reads ``moment`` for every store module (each reads it as ``now``)."""
    for name, module in list(sys.modules.items()):
        if name.startswith("worker.store.") and getattr(module, "now", None) is sql.now:
            monkeypatch.setattr(module, "now", lambda: moment)


def test_a_host_whose_clock_is_125s_fast_cannot_take_a_live_lease(engine, job, monkeypatch):
    """Leases are granted, compared and expired on the database's clock, never the caller's."""
    item_id = one_item(engine, job)
    assert store.claim_item(engine, item_id, "honest", 60) is not None
    fast = datetime.now(timezone.utc) + timedelta(seconds=125)
    pretend_host_clock(monkeypatch, fast)

    assert store.claim_item(engine, item_id, "fast-host", 60) is None
    assert 55 < store.lease_left(engine, item_id) <= 60
    assert [i for b in store.expired_or_stuck_ids(engine, job.id) for i in b] == []
    assert store.requeue_expired(engine) == []
    assert store.record_failure(engine, item_id, "fast-host", "500", None, None) is False
    assert item_row(engine, item_id).lease_owner == "honest"


def test_a_host_whose_clock_is_slow_does_not_shorten_the_leases_it_grants(engine, job, monkeypatch):
    item_id = one_item(engine, job)
    slow = datetime.now(timezone.utc) - timedelta(seconds=125)
    pretend_host_clock(monkeypatch, slow)
    assert store.claim_item(engine, item_id, "slow-host", 60) is not None
    monkeypatch.undo()
    assert store.claim_item(engine, item_id, "other", 60) is None
    assert store.requeue_expired(engine) == []


# --------------------------------------------------------------------------- heartbeat and sweep


def test_renew_leases_renews_held_rows_in_one_call_and_omits_rows_no_longer_held(engine, job):
    mine, taken, finished, other = store.insert_items(
        engine, job.id, [url_item(n) for n in range(4)]
    )
    store.claim_item(engine, mine, "me-1", 0.5)
    store.claim_item(engine, taken, "me-2", -1)  # ran out: someone else takes it over
    assert store.claim_item(engine, taken, "them", 60) is not None
    store.claim_item(engine, finished, "me-3", 60)
    store.record_result(engine, finished, "me-3", job.service, vendor_response())
    store.claim_item(engine, other, "them-2", 0.5)

    held = {mine: "me-1", taken: "me-2", finished: "me-3"}
    assert store.renew_leases(engine, held, 60) == {mine}
    assert store.lease_left(engine, mine) > 55
    assert store.lease_left(engine, other) < 1  # not ours: untouched
    assert item_row(engine, taken).lease_owner == "them"
    assert store.renew_leases(engine, {}, 60) == set()


def test_requeue_expired_takes_back_only_expired_running_rows_once(engine, job):
    ids = store.insert_items(engine, job.id, [url_item(n) for n in range(5)])
    live, dead_a, dead_b, mine, queued = sorted(ids)
    store.mark_queued(engine, [queued])
    store.claim_item(engine, live, "alive", 60)
    for item_id in (dead_a, dead_b, mine):
        store.claim_item(engine, item_id, "dead", -1)

    assert store.requeue_expired(engine, exclude=[mine]) == [dead_a, dead_b]
    assert store.requeue_expired(engine, exclude=[mine]) == []  # each row to one sweeper
    row = item_row(engine, dead_a)
    assert (row.state, row.lease_owner, row.lease_expires_at) == ("queued", None, None)
    assert item_row(engine, live).state == "running"
    assert item_row(engine, queued).state == "queued"
    # The dead owner can no longer hand the row back, but its billed answer is still kept.
    assert store.record_retry(engine, dead_a, "dead", "500", None, None) is False
    assert store.record_result(engine, dead_b, "dead", job.service, vendor_response()) is True
    assert store.requeue_expired(engine) == [mine]


def test_sweepers_racing_share_out_expired_rows_without_overlap(engine, job):
    ids = store.insert_items(engine, job.id, [url_item(n) for n in range(60)])
    for item_id in ids:
        store.claim_item(engine, item_id, "dead", -1)
    got: list[list[int]] = []
    barrier = threading.Barrier(4)

    def sweep() -> None:
        barrier.wait()
        got.append(store.requeue_expired(engine, limit=20))

    threads = [threading.Thread(target=sweep) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    flat = [i for batch in got for i in batch]
    assert len(flat) == len(set(flat))
    flat += store.requeue_expired(engine)
    assert sorted(flat) == sorted(ids)


# --------------------------------------------------------------------------- unstorable answers


def test_an_answer_with_nul_characters_and_non_finite_numbers_is_stored(engine, job):
    """PostgreSQL refuses NUL in text and jsonb, and NaN/Infinity in jsonb: such an answer was
    retried forever as "database unavailable". It is now stored, readably, on both databases."""
    item_id = one_item(engine, job)
    body = {
        "Code": 200,
        "Msg": "O\x00K",
        "RequestId": "req\x00-1",
        "Data": {
            "RiskLevel": "high",
            "Result": [{"Label": "contraband\x00_drug", "Confidence": float("nan")}],
            "Ext": {
                "TextInImage": {
                    "OcrResult": [{"Text": "buy\x00 now"}],
                    "RiskWord": ["a\x00b"],
                    "Score\x00": float("inf"),
                },
                "Overflow": [float("-inf"), 1.5],
            },
        },
    }
    assert store.record_result(engine, item_id, "w1", job.service, parse_response(body)) is True
    with engine.connect() as conn:
        result = conn.execute(sa.select(store.results)).one()
        label = conn.execute(sa.select(store.result_labels)).one()
    row = item_row(engine, item_id)
    assert (row.state, row.last_message) == ("done", "OK")
    assert (result.msg, result.request_id) == ("OK", "req-1")
    assert result.ext["TextInImage"]["OcrResult"] == [{"Text": "buy now"}]
    assert result.ext["TextInImage"]["Score"] == "Infinity"
    assert result.raw["Data"]["Ext"]["Overflow"] == ["-Infinity", 1.5]
    assert result.raw["Data"]["Result"] == [{"Label": "contraband_drug", "Confidence": "NaN"}]
    assert (label.label, label.confidence) == ("contraband_drug", None)


def test_storable_is_a_copy_without_nul_or_non_finite_numbers():
    value = {"a\x00": ["x\x00y", float("nan"), 2.0, {"b": float("-inf")}], "n": None, "i": 3}
    assert store.storable(value) == {"a": ["xy", "NaN", 2.0, {"b": "-Infinity"}], "n": None, "i": 3}
    assert store.storable(float("inf"), number=None) is None
    assert value["a\x00"][0] == "x\x00y"  # the input is left alone


def test_only_connection_class_errors_count_as_a_database_outage(engine, job):
    from sqlalchemy import exc

    unreachable = store.make_engine("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(exc.OperationalError) as refused_connection:
        unreachable.connect()
    unreachable.dispose()
    assert store.is_outage(refused_connection.value)
    assert store.is_outage(exc.DisconnectionError("gone"))
    with pytest.raises(exc.IntegrityError) as duplicate, engine.begin() as conn:
        conn.execute(
            sa.insert(store.jobs).values(
                name=job.name, service="s", created_at=datetime.now(timezone.utc)
            )
        )
    assert not store.is_outage(duplicate.value)
    with pytest.raises(exc.DBAPIError) as bad_sql, engine.connect() as conn:
        conn.exec_driver_sql("SELECT no_such_column FROM items")
    assert not store.is_outage(bad_sql.value)


def test_bulk_insert_keeps_any_text_and_time_exactly_skips_duplicates_and_keeps_order(engine, job):
    """PostgreSQL inserts through COPY, SQLite through raw multi-row statements: tabs,
    newlines, backslashes, "\\N" and non-ASCII survive, timestamps read back to the
    microsecond, a key already in the job (or twice in the batch) is skipped, and ids
    follow the input order."""
    from datetime import datetime, timezone

    modified = datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=timezone.utc)
    odd = ["tab\there", "new\nline", "back\\slash", "\\N", "图片 é", "cr\rlf", ""]
    rows = [
        url_item(
            n,
            ref_key=f"k{n}:{text}",
            oss_object=text or None,
            referer=text,
            last_modified=modified,
            etag="E",
            size=n,
        )
        for n, text in enumerate(odd)
    ]
    first = store.insert_items(engine, job.id, [*rows, rows[0]])
    assert first == sorted(first) and len(first) == len(odd)
    again = store.insert_items(engine, job.id, [rows[1], url_item(99), rejected_item(5)])
    assert len(again) == 2  # rows[1] is already in the job
    with engine.connect() as conn:
        stored = conn.execute(
            sa.select(
                store.items.c.id,
                store.items.c.oss_object,
                store.items.c.referer,
                store.items.c.last_modified,
                store.items.c.size,
                store.items.c.created_at,
                store.items.c.finished_at,
                store.items.c.state,
            ).order_by(store.items.c.id)
        ).all()
    assert [r.referer for r in stored[: len(odd)]] == odd
    assert [r.oss_object for r in stored[: len(odd)]] == [t or None for t in odd]
    assert {r.last_modified for r in stored[: len(odd)]} == {modified}
    assert [r.size for r in stored[: len(odd)]] == list(range(len(odd)))
    assert all(r.created_at.tzinfo is not None and r.finished_at is None for r in stored[:-1])
    assert stored[-1].state == "rejected" and stored[-1].finished_at == stored[-1].created_at
