"""worker.heartbeat against real SQL and Redis: held leases are renewed, dead ones swept and
published once, and a dead process's messages in hand are published by one live process."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

import pytest
import redis
import sqlalchemy as sa

from tests.support import wait_until
from worker import store
from worker.heartbeat import (
    IN_HAND_TTL_S,
    LeaseKeeper,
    MessagesInHand,
    renew_interval,
    sweep_interval,
)

pytestmark = pytest.mark.service


def _items(engine: sa.Engine, n: int) -> list[int]:
    job = store.get_or_create_job(engine, "hb", "baselineCheck_global", "")
    return sorted(
        store.insert_items(
            engine,
            job.id,
            [
                store.NewItem(
                    kind="url",
                    ref_key=f"https://example.com/{i}.png",
                    image_url=f"https://example.com/{i}.png",
                    oss_bucket=None,
                    oss_object=None,
                    oss_region=None,
                    data_id=None,
                    referer=None,
                    source="in.txt",
                    line=i,
                    state="pending",
                )
                for i in range(n)
            ],
        )
    )


def test_intervals_renew_three_times_a_lease_and_sweep_every_few_seconds() -> None:
    assert renew_interval(30) == 10
    assert sweep_interval(30) == 5 and sweep_interval(600) == 5 and sweep_interval(2) == 1


def test_the_keeper_renews_what_it_holds_sweeps_the_dead_and_notices_a_takeover(
    engine: sa.Engine,
) -> None:
    held, dead, lost = _items(engine, 3)
    published: list[Sequence[int]] = []
    keeper = LeaseKeeper(engine, 1.0, published.append)
    store.claim_item(engine, held, "me", 1.0)
    store.claim_item(engine, lost, "me-too", -1)
    store.claim_item(engine, dead, "dead", -1)
    assert store.claim_item(engine, lost, "thief", 60) is not None  # ran out, taken over

    with keeper.holding(held, "me"), keeper.holding(lost, "me-too"):
        assert keeper.renew() == 1
        assert keeper.still_held(held) and not keeper.still_held(lost)
        assert keeper.sweep() == [dead]
        assert published == [[dead]]
        # Its own row is never swept, even when its renewal is late.
        store.claim_item(engine, dead, "someone", 60)
        with engine.begin() as conn:
            conn.execute(
                sa.update(store.items)
                .where(store.items.c.id == held)
                .values(lease_expires_at=datetime.now(timezone.utc) - timedelta(seconds=5))
            )
        assert keeper.sweep() == []
    assert keeper.held() == {}


def test_a_dead_process_s_messages_in_hand_go_to_one_live_process(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    dead = MessagesInHand(client, "ns", "host/1/dead", ttl_seconds=1)
    live = MessagesInHand(client, "ns", "host/2/live", ttl_seconds=30)
    other = MessagesInHand(client, "ns", "host/3/other", ttl_seconds=30)
    stranger = MessagesInHand(client, "another-deployment", "host/4/x", ttl_seconds=30)
    for item_id in (5, 6, 7, 7):  # 7 twice: a duplicate message, or a retry's come early
        dead.took(item_id)
    dead.done(6)
    dead.done(7)  # one of two
    live.took(8)
    assert live.orphans() == []  # alive: nothing to take
    wait_until(lambda: client.exists("imgmod:alive:ns:host/1/dead") == 0, 5, "the key to expire")
    assert stranger.orphans() == []  # another deployment's ids are not its to publish
    assert live.orphans() == [5, 7]
    assert other.orphans() == []  # once, to one process


def test_a_message_s_ids_go_in_hand_in_one_call_with_the_liveness_key_and_the_expiry(
    redis_url: str,
) -> None:
    client = redis.Redis.from_url(redis_url)
    hands = MessagesInHand(client, "ns", "host/9/me", ttl_seconds=30)
    held, alive = "imgmod:inhand:ns:host/9/me", "imgmod:alive:ns:host/9/me"
    hands.took(1, 2, 2, 3)  # 2 twice: a duplicate message's id
    assert client.hgetall(held) == {b"1": b"1", b"2": b"2", b"3": b"1"}
    assert 0 < int(client.ttl(alive)) <= 30
    assert IN_HAND_TTL_S - 60 < int(client.ttl(held)) <= IN_HAND_TTL_S
    client.expire(held, 100)
    client.delete(alive)
    hands.took(4)  # within a third of the TTL of the last refresh: the hash's expiry left be
    assert 0 < int(client.ttl(held)) <= 100
    assert client.exists(alive) == 1  # the liveness key, with every message
    hands.done(1, 2, 3, 4)
    assert client.hgetall(held) == {b"2": b"1"}
    hands.done(2)
    assert client.exists(held) == 0
