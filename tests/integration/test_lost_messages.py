"""Queued rows whose message is nowhere (lost with a killed worker or refiller) are found by the
live workers and published again, once, after a grace; rows whose message waits in the queue or
in a worker's hands are left alone. Real Redis, SQLite and PostgreSQL, a real worker process."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from tests.support import wait_until
from worker import queue, store
from worker.heartbeat import LeaseKeeper, MessagesInHand
from worker.orphans import LOOK_QUEUE_MAX, ORPHAN_GRACE_S, OrphanFinder, message_item_id

pytestmark = pytest.mark.service


def _rows(engine: sa.Engine, job: str, urls: Sequence[str]) -> list[int]:
    """``pending`` rows of a new job, ids ascending."""
    job_id = store.get_or_create_job(engine, job, "baselineCheck_global", "").id
    new = [
        store.NewItem(
            kind="url",
            ref_key=url,
            image_url=url,
            oss_bucket=None,
            oss_object=None,
            oss_region=None,
            data_id=None,
            referer=None,
            source="in.txt",
            line=i,
            state="pending",
        )
        for i, url in enumerate(urls)
    ]
    return sorted(store.insert_items(engine, job_id, new))


def _take_all(engine: sa.Engine, job: str) -> list[int]:
    """Every pending row ``queued`` and no message published: a refiller killed between the
    two steps (or a message a killed worker took with it) leaves exactly this."""
    found = store.get_job(engine, job)
    assert found is not None
    return store.take_pending(engine, found.id, 100_000)


def _queue_ids(client: redis.Redis) -> list[int]:
    ids = (message_item_id(m) for m in client.lrange("imgmod", 0, -1))
    return sorted(i for i in ids if i is not None)


def test_only_a_row_with_no_message_anywhere_is_taken_after_the_grace_and_by_one_worker(
    world: tuple[sa.Engine, Any, redis.Redis],
) -> None:
    engine, app, client = world
    waiting, in_hand, lost = _rows(engine, "j", [f"https://example.com/{i}.png" for i in range(3)])
    assert _take_all(engine, "j") == [waiting, in_hand, lost]
    queue.publish_ids(app, [waiting])
    MessagesInHand(client, "ns", "host/1/other", ttl_seconds=30).took(in_hand)
    hands = MessagesInHand(client, "ns", "host/2/me", ttl_seconds=30)
    mine, another_worker = OrphanFinder(engine, app), OrphanFinder(engine, app)

    t0 = 1000.0
    assert mine.look(hands.held_anywhere, now=t0) == []
    assert another_worker.look(hands.held_anywhere, now=t0 + 1) == []
    assert mine.look(hands.held_anywhere, now=t0 + ORPHAN_GRACE_S - 5) == []
    assert mine.look(hands.held_anywhere, now=t0 + ORPHAN_GRACE_S - 4) == []  # not due
    assert mine.look(hands.held_anywhere, now=t0 + ORPHAN_GRACE_S) == [lost]
    # The other worker confirms it too, but the row is the first finder's to publish.
    assert another_worker.look(hands.held_anywhere, now=t0 + ORPHAN_GRACE_S + 1) == []
    # Published again (the keeper does it): the next looks see its message.
    queue.publish_ids(app, [lost])
    assert mine.look(hands.held_anywhere, now=t0 + 2 * ORPHAN_GRACE_S) == []
    assert _queue_ids(client) == sorted([waiting, lost])


def test_no_look_while_the_queue_is_long_and_a_long_queue_forgets_the_suspects(
    world: tuple[sa.Engine, Any, redis.Redis],
) -> None:
    engine, app, client = world
    ids = _rows(engine, "long", [f"https://example.com/{i}.png" for i in range(LOOK_QUEUE_MAX + 2)])
    _take_all(engine, "long")
    held: set[int] = set()
    finder = OrphanFinder(engine, app)
    queue.publish_ids(app, ids[1:])  # every row but the first has its message: LLEN over max
    assert finder.look(lambda: held, now=0.0) == []
    assert finder.look(lambda: held, now=ORPHAN_GRACE_S) == []
    client.ltrim("imgmod", -1, 0)  # the queue ran dry (consumed, say): now the first is seen
    assert finder.look(lambda: held, now=ORPHAN_GRACE_S + 5) == []  # a suspect from now on
    lost = finder.look(lambda: held, now=2 * ORPHAN_GRACE_S + 5)
    assert lost == ids  # none had a message any more


def test_the_lease_keeper_publishes_the_lost_rows_its_finder_confirms(
    world: tuple[sa.Engine, Any, redis.Redis],
) -> None:
    engine, app, client = world
    (lost,) = _rows(engine, "k", ["https://example.com/k.png"])
    _take_all(engine, "k")
    finder = OrphanFinder(engine, app, grace=0.0, interval=0.0)
    keeper = LeaseKeeper(
        engine,
        30.0,
        lambda ids: queue.publish_ids(app, ids),
        MessagesInHand(client, "ns", "host/1/me", ttl_seconds=30),
        finder=lambda: finder,
    )
    assert keeper.republish_lost() == [lost]
    assert _queue_ids(client) == [lost]
    assert keeper.republish_lost() == []  # its message is there now
    without_hands = LeaseKeeper(engine, 30.0, lambda ids: None, None, finder=lambda: finder)
    client.delete("imgmod")
    assert without_hands.republish_lost() == []  # can't tell a prefetched message from a lost one


@pytest.mark.slow
def test_a_worker_publishes_rows_left_queued_without_a_message_with_no_imgmod_run(
    pipeline: Any,
) -> None:
    """Rows `queued` with no message (their refiller killed after taking them): before, only
    `imgmod run`'s stall detection or `imgmod resume` brought them back; now a live worker
    does, one grace later, and each is billed once."""
    n = 20
    urls = [pipeline.images.image_url(i, "png") for i in range(n)]
    ids = _rows(pipeline.engine, "stranded", urls)
    assert _take_all(pipeline.engine, "stranded") == ids
    started = time.monotonic()
    worker = pipeline.start_worker(concurrency=4)
    job_id = pipeline.job_id("stranded")

    wait_until(
        lambda: store.state_counts(pipeline.engine, job_id)["done"] == n,
        ORPHAN_GRACE_S + 30,
        f"{n} stranded rows done",
        interval=0.2,
    )
    took = time.monotonic() - started
    assert f"{n} queued rows had no message" in worker.log(), worker.log()[-3000:]
    stats = pipeline.settled_stats()
    assert stats["billed"] == n and set(stats["billed_by_image"].values()) == {1}
    print(f"{n} stranded rows done {took:.1f}s after the worker started")
