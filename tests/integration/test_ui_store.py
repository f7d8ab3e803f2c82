"""The review queue's store on SQLite and PostgreSQL: order, leases under concurrency, decisions
that need the lease, undo as a new row, and Browse's filters."""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from worker import store
from worker.store import review
from worker.store.browse import BrowseFilter, browse_all, browse_page
from worker.store.review_queue import QueueMarks
from worker.store.schema import decisions, events, items, jobs, review_leases

pytestmark = pytest.mark.service


@pytest.fixture
def engine(database_url):
    store.upgrade(database_url)
    engine = store.make_engine(database_url)
    yield engine
    engine.dispose()


def _job(engine: sa.Engine, name: str, n: int) -> tuple[int, list[int]]:
    now = datetime.now(timezone.utc)
    with engine.begin() as conn:
        job_id = conn.execute(
            sa.insert(jobs)
            .values(name=name, service="baselineCheck_global", created_at=now)
            .returning(jobs.c.id)
        ).scalar_one()
        ids = [
            conn.execute(
                sa.insert(items).values(job_id=job_id, service="baselineCheck_global",
                                        kind="url", ref_key=f"{name}-{i}",
                                        image_url=f"https://img.example/{name}/{i}.png",
                                        source="refs.txt", line=i + 1, state="done",
                                        created_at=now, updated_at=now)
                .returning(items.c.id)
            ).scalar_one()
            for i in range(n)
        ]  # fmt: skip
    return int(job_id), [int(i) for i in ids]


def _to_review(engine: sa.Engine, job_id: int, ids: list[int], priority=lambda i: 0) -> None:
    store.record_decisions(
        engine,
        [store.NewDecision(i, job_id, "review", "policy", "policy", rule="r", priority=priority(n))
         for n, i in enumerate(ids)],
    )  # fmt: skip


def test_the_queue_is_highest_priority_first_and_skips_superseded_decisions(engine):
    job_id, ids = _job(engine, "a", 6)
    _to_review(engine, job_id, ids, priority=lambda n: n % 3)
    store.record_decisions(engine, [store.NewDecision(ids[5], job_id, "pass", "policy", "v2")])
    order = []
    while (lease := review.take_next(engine, "r1", exclude=order)) is not None:
        order.append(lease.item_id)
        review.release(engine, lease.item_id, "r1")
    # priorities 0,1,2,0,1,(2 superseded by pass): 2 first, then 1s, then 0s, oldest first
    assert order == [ids[2], ids[1], ids[4], ids[0], ids[3]]
    assert review.take_next(engine, "r1", job_id=job_id + 99) is None


def test_a_queue_mark_skips_reviewed_rows_and_still_sees_new_and_undone_ones(engine):
    job_id, ids = _job(engine, "m", 8)
    _to_review(engine, job_id, ids, priority=lambda n: 50 - n)  # queue order: ids as given
    marks = QueueMarks()
    taken = []
    for _ in range(4):
        lease = review.take_next(engine, "r1", marks=marks)
        taken.append(lease.item_id)
        review.decide(engine, lease.item_id, "r1", "pass", None)
    assert taken == ids[:4]
    assert marks.get(None).decision_id > 0
    # a new policy run sends ids[0] back to review at the top, after the mark was set
    _to_review(engine, job_id, [ids[0]], priority=lambda n: 99)
    assert review.take_next(engine, "r2", marks=marks).item_id == ids[0]
    # r2 holds ids[0]; r3 gets the next one in order; an undo of an earlier review comes back
    assert review.take_next(engine, "r3", marks=marks).item_id == ids[4]
    last = store.item_decisions(engine, ids[3])[-1]
    review.undo(engine, last.id, "r1")
    assert review.take_next(engine, "r1", marks=marks).item_id == ids[3]
    assert review.peek_next(engine, "r4", job_id=None, exclude=[], marks=marks).item_id == ids[5]


def test_concurrent_reviewers_never_hold_the_same_image(engine):
    job_id, ids = _job(engine, "b", 40)
    _to_review(engine, job_id, ids)
    got: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def reviewer(name: str) -> None:
        try:
            mine = got.setdefault(name, [])
            for _ in range(5):
                lease = review.take_next(engine, name)
                assert lease is not None
                mine.append(lease.item_id)
                review.decide(engine, lease.item_id, name, "pass", None)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reviewer, args=(f"r{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    taken = [item for mine in got.values() for item in mine]
    assert len(taken) == 30 and len(set(taken)) == 30
    with engine.connect() as conn:
        assert (
            conn.execute(
                sa.select(sa.func.count()).select_from(events).where(events.c.kind == "review")
            ).scalar_one()
            == 30
        )


def test_a_lease_keeps_others_out_until_it_runs_out(engine):
    job_id, ids = _job(engine, "c", 1)
    _to_review(engine, job_id, ids)
    assert review.take_next(engine, "r1", lease_seconds=30).item_id == ids[0]
    assert review.take_next(engine, "r1").item_id == ids[0]  # a reload shows it again
    assert review.take_next(engine, "r2") is None
    with pytest.raises(review.ReviewRefused, match="is not leased to you"):
        review.decide(engine, ids[0], "r2", "block", None)
    with engine.begin() as conn:  # r1's lease runs out
        long_ago = datetime(2000, 1, 1, tzinfo=timezone.utc)
        conn.execute(sa.update(review_leases).values(expires_at=long_ago))
    assert review.take_next(engine, "r2").item_id == ids[0]
    with pytest.raises(review.ReviewRefused, match="is not leased to you"):
        review.decide(engine, ids[0], "r1", "block", None)


def test_undo_restores_the_decision_before_as_a_new_row(engine):
    job_id, ids = _job(engine, "d", 2)
    _to_review(engine, job_id, ids, priority=lambda n: 9)
    lease = review.take_next(engine, "r1")
    mine = review.decide(engine, lease.item_id, "r1", "block", "a <b>reason</b>")
    with pytest.raises(review.ReviewRefused, match="is not a review of yours"):
        review.undo(engine, mine.id, "r2")
    assert review.undo(engine, mine.id, "r1") == lease.item_id
    rows = store.item_decisions(engine, lease.item_id)
    assert [(d.decision, d.source, d.actor, d.priority) for d in rows] == [
        ("review", "policy", "policy", 9), ("block", "review", "r1", None),
        ("review", "review", "r1", 9),
    ]  # fmt: skip
    assert rows[1].reason == "a <b>reason</b>"
    assert review.take_next(engine, "r1").item_id == lease.item_id  # back to r1
    with pytest.raises(review.ReviewRefused, match="was decided again"):
        review.undo(engine, mine.id, "r1")


def test_browse_filters_by_decision_label_confidence_and_job(engine):
    job_a, ids_a = _job(engine, "e", 5)
    job_b, _ = _job(engine, "f", 3)
    _to_review(engine, job_a, ids_a[:2])
    now = datetime.now(timezone.utc)
    with engine.begin() as conn:
        for n, item in enumerate(ids_a):
            result = conn.execute(
                sa.insert(store.results)
                .values(
                    item_id=item,
                    job_id=job_a,
                    service="baselineCheck_global",
                    risk_level="high",
                    raw={},
                    moderated_at=now,
                )
                .returning(store.results.c.id)
            ).scalar_one()
            conn.execute(
                sa.insert(store.result_labels).values(
                    result_id=result, job_id=job_a, item_id=item, label="porn", confidence=n * 20.0
                )
            )
    # fmt: skip
    every = browse_page(engine, BrowseFilter())
    assert len(every) == 8
    assert [r.item_id for r in browse_page(engine, BrowseFilter(job_id=job_b))] == [
        r.item_id for r in every[5:]
    ]
    review_rows = browse_page(engine, BrowseFilter(decisions=("review",)))
    assert [r.item_id for r in review_rows] == ids_a[:2]
    mid = BrowseFilter(label="porn", min_confidence=20, max_confidence=60)
    assert [r.item_id for r in browse_page(engine, mid)] == ids_a[1:4]
    assert browse_page(engine, mid)[0].labels == (("porn", 20.0),)
    assert [r.item_id for r in browse_page(engine, BrowseFilter(), after=ids_a[3], limit=2)] == [
        ids_a[4], every[5].item_id
    ]  # fmt: skip
    assert len(list(browse_all(engine, BrowseFilter(risk_levels=("high",)), batch=2))) == 5
    later = BrowseFilter(since=datetime(2100, 1, 1, tzinfo=timezone.utc))
    assert browse_page(engine, later) == []
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(decisions)).scalar_one() == 2
