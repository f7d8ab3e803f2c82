"""Leases that run out while their worker is only slow: the row is taken over, one answer is
stored per image, and the price is at most one extra billed call per taken-over image."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa

from worker import store
from worker.local import wait_until
from worker.results import parse_response

pytestmark = pytest.mark.service

SLOW_ITEMS = 6


def _answer(request_id: str) -> Any:
    return parse_response(
        {
            "RequestId": request_id,
            "Code": 200,
            "Msg": "OK",
            "Data": {"RiskLevel": "none", "Result": [{"Label": "nonLabel", "Confidence": None}]},
        },
        http_status=200,
    )


@pytest.fixture
def engine(database_url: str) -> Any:
    store.upgrade(database_url)
    engine = store.make_engine(database_url)
    yield engine
    engine.dispose()


def test_expired_lease_taken_over_then_both_owners_record_one_result(engine: Any) -> None:
    job = store.get_or_create_job(engine, "lease", "baselineCheck_global", "")
    (item_id,) = store.insert_items(
        engine,
        job.id,
        [
            store.NewItem(
                kind="url",
                ref_key="https://example.com/1.png",
                image_url="https://example.com/1.png",
                oss_bucket=None,
                oss_object=None,
                oss_region=None,
                data_id=None,
                referer=None,
                source="in.txt",
                line=1,
                state="pending",
            )
        ],
    )
    assert store.claim_item(engine, item_id, "slow", lease_seconds=0.2) is not None
    assert store.claim_item(engine, item_id, "fast", lease_seconds=60) is None  # still leased

    taken: list[Any] = []
    wait_until(
        lambda: bool(taken.append(store.claim_item(engine, item_id, "fast", 60)) or taken[-1]),
        10,
        "the slow worker's lease to run out",
    )
    # The old owner may no longer hand the row back or fail it: the new owner holds it.
    assert store.record_retry(engine, item_id, "slow", "500", "late", None) is False
    assert store.record_failure(engine, item_id, "slow", "500", "late", None) is False

    # Both calls were paid for; both owners store their answer at the same moment.
    outcomes: dict[str, bool] = {}
    barrier = threading.Barrier(2)

    def record(owner: str) -> None:
        barrier.wait()
        outcomes[owner] = store.record_result(
            engine, item_id, owner, "baselineCheck_global", _answer(f"req-{owner}")
        )

    threads = [threading.Thread(target=record, args=(o,)) for o in ("slow", "fast")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    assert sorted(outcomes.values()) == [False, True]
    with engine.connect() as conn:
        results = conn.execute(
            sa.select(store.results.c.request_id).where(store.results.c.item_id == item_id)
        ).all()
        state = conn.execute(
            sa.select(store.items.c.state, store.items.c.lease_owner).where(
                store.items.c.id == item_id
            )
        ).one()
    winner = next(owner for owner, stored in outcomes.items() if stored)
    assert [r.request_id for r in results] == [f"req-{winner}"]
    assert (state.state, state.lease_owner) == ("done", None)


@pytest.mark.slow
def test_slow_call_outliving_its_lease_is_taken_over_and_stored_once(stack: Any) -> None:
    # Calls take 4 s, leases last 2 s: every lease runs out while its worker waits on the API.
    stack.emulator.configure(latency_ms=4000)
    lease = {"IMGMOD_LEASE_SECONDS": "2", "IMGMOD_READ_TIMEOUT": "10"}
    stack.start_worker(concurrency=8, **lease)
    stack.start_worker(concurrency=8, **lease)
    src, _ = stack.write_urls("slow.txt", SLOW_ITEMS)
    stack.imgmod("enqueue", str(src), "--job", "slow", check=True)
    job_id = stack.job_id("slow")

    def all_leases_expired() -> bool:
        expired = sum(
            map(len, store.expired_or_stuck_ids(stack.engine, job_id, include_queued=False))
        )
        return expired == SLOW_ITEMS and stack.counts("slow")["running"] == SLOW_ITEMS

    wait_until(all_leases_expired, 30, "every lease to run out mid-call")
    assert stack.emulator.stats()["billed"] == 0  # no answer yet: the first calls are in flight
    # Re-published (as `imgmod resume` or a broker redelivery would): the other worker claims
    # the expired rows and calls again while the first calls are still on their way.
    resumed = stack.imgmod("resume", "slow", check=True)
    assert f"re-enqueued {SLOW_ITEMS}" in resumed.stdout
    done = stack.imgmod("wait", "slow", "--stall-seconds", "600", "--timeout", "60")

    assert done.returncode == 0, done.stdout + done.stderr + stack.worker_logs()
    assert stack.counts("slow")["done"] == SLOW_ITEMS
    assert stack.results_per_item_max() == 1
    taken_over = int(stack.scalar("SELECT count(*) FROM items WHERE attempts >= 2"))
    # Let the second calls land before reading the bill.
    wait_until(lambda: stack.emulator.stats()["in_flight"] == 0, 30, "the last calls to land")
    stats = stack.emulator.stats()
    extra = stats["billed"] - SLOW_ITEMS
    # The documented price of an expired lease: one more billed call per taken-over image.
    assert len(stats["billed_by_image"]) == SLOW_ITEMS
    assert max(stats["billed_by_image"].values()) <= 2
    assert extra <= taken_over, (extra, taken_over)
    print(f"taken over {taken_over} of {SLOW_ITEMS}; billed {stats['billed']} ({extra} extra)")
