"""Leases: renewed by a live worker's heartbeat however long its call; run out when the worker
freezes, and then the row is taken over, one answer is stored per image, and the price is at
most one extra billed call per taken-over image."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa

from tests.support import wait_until
from worker import store
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
def test_a_live_worker_s_heartbeat_keeps_its_leases_through_calls_longer_than_a_lease(
    stack: Any,
) -> None:
    """Calls take 4 s, leases last 2 s: the heartbeat renews them, so no row is taken over
    and nothing is paid twice, even when every row is published again mid-call."""
    stack.emulator.configure(latency_ms=4000)
    lease = {"IMGMOD_LEASE_SECONDS": "2", "IMGMOD_READ_TIMEOUT": "10"}
    stack.start_worker(concurrency=8, **lease)
    src, _ = stack.write_urls("slow.txt", SLOW_ITEMS)
    stack.imgmod("enqueue", str(src), "--job", "slow", check=True)
    wait_until(lambda: stack.counts("slow")["running"] == SLOW_ITEMS, 30, "every row claimed")
    stack.start_worker(concurrency=8, **lease)
    # Twice the lease into the calls: without renewals every lease would have run out.
    wait_until(lambda: stack.emulator.stats()["in_flight"] == SLOW_ITEMS, 10, "calls under way")
    job_id = stack.job_id("slow")
    past_a_lease = time.monotonic() + 2.5  # a lease and a sweep, still before the answers

    def leases_held_until_then() -> bool:
        expired = sum(map(len, store.expired_or_stuck_ids(stack.engine, job_id)))
        assert expired == 0, "a live worker's lease ran out mid-call"
        return time.monotonic() >= past_a_lease

    wait_until(leases_held_until_then, 10, "a lease's length of calls")
    resumed = stack.imgmod("resume", "slow", check=True)
    assert "re-enqueued 0" in resumed.stdout, resumed.stdout

    done = stack.imgmod("wait", "slow", "--stall-seconds", "600", "--timeout", "60")
    assert done.returncode == 0, done.stdout + done.stderr + stack.worker_logs()
    assert int(stack.scalar("SELECT max(attempts) FROM items")) == 1
    wait_until(lambda: stack.emulator.stats()["in_flight"] == 0, 30, "the last calls to land")
    assert stack.emulator.stats()["billed"] == SLOW_ITEMS


@pytest.mark.slow
def test_a_frozen_worker_s_rows_are_taken_over_and_each_image_is_stored_once(stack: Any) -> None:
    """A worker that stops renewing without dying (SIGSTOP: a VM pause, a swap storm) loses its
    rows to a live worker's sweep; when it wakes, its answers and the new owner's both arrive
    and one result per image is stored, at the price of one extra call per taken-over image."""
    stack.emulator.configure(latency_ms=4000)
    lease = {"IMGMOD_LEASE_SECONDS": "2", "IMGMOD_READ_TIMEOUT": "10"}
    frozen = stack.start_worker(concurrency=8, **lease)
    src, _ = stack.write_urls("slow.txt", SLOW_ITEMS)
    stack.imgmod("enqueue", str(src), "--job", "slow", check=True)
    wait_until(lambda: stack.emulator.stats()["in_flight"] == SLOW_ITEMS, 30, "calls under way")
    os.kill(frozen.process.pid, signal.SIGSTOP)
    try:
        stack.start_worker(concurrency=8, **lease)
        # The sweep (not `imgmod resume`, not the broker) hands the rows to the live worker.
        wait_until(
            lambda: (
                int(stack.scalar("SELECT count(*) FROM items WHERE attempts >= 2")) == SLOW_ITEMS
            ),
            60,  # the live worker's start-up, a lease and a sweep: 30 s ran out once under load
            "the live worker to take every frozen row over",
        )
    finally:
        os.kill(frozen.process.pid, signal.SIGCONT)
    assert "leases ran out" in stack.workers[1].log()

    done = stack.imgmod("wait", "slow", "--stall-seconds", "600", "--timeout", "60")
    assert done.returncode == 0, done.stdout + done.stderr + stack.worker_logs()
    assert stack.counts("slow")["done"] == SLOW_ITEMS
    assert stack.results_per_item_max() == 1
    wait_until(lambda: stack.emulator.stats()["in_flight"] == 0, 30, "the last calls to land")
    stats = stack.emulator.stats()
    assert len(stats["billed_by_image"]) == SLOW_ITEMS
    assert max(stats["billed_by_image"].values()) <= 2
    print(f"billed {stats['billed']} for {SLOW_ITEMS} images, all taken over")
