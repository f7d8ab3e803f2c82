"""One worker process of the fleet tops up the window and looks for lost messages, for all
(worker.duty): a second process with the duty held elsewhere publishes and republishes
nothing, and the duty passes on once its holder stops renewing it. Real Redis, SQLite and
PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from tests.support import wait_until
from worker import store
from worker.duty import Duty
from worker.orphans import ORPHAN_GRACE_S, OrphanFinder
from worker.window import Refiller, RefillLoop

pytestmark = pytest.mark.service


def _pending(engine: sa.Engine, job: str, n: int) -> list[int]:
    job_id = store.get_or_create_job(engine, job, "baselineCheck_global", "").id
    rows = [
        store.NewItem(
            "url", f"u{i}", f"https://example.com/{job}/{i}.png", None, None, None, None, None,
            "in.txt", i, "pending",
        )
        for i in range(n)
    ]  # fmt: skip
    return sorted(store.insert_items(engine, job_id, rows))


def test_a_duty_is_one_process_s_until_it_stops_renewing_it(
    world: tuple[sa.Engine, Any, redis.Redis],
) -> None:
    _, _, client = world
    first, second = Duty("d", hold_seconds=0.5), Duty("d", hold_seconds=0.5)
    assert first.holder != second.holder
    assert first.mine(client)
    assert not second.mine(client)
    assert first.mine(client)  # renewed: still the holder's
    assert client.get(first.key) == first.holder.encode()
    assert 0 < int(client.pttl(first.key)) <= 500
    # The holder stops (killed, frozen): the other takes the duty once the key runs out.
    stopped = time.monotonic()
    wait_until(lambda: second.mine(client), 5, "the duty to pass on", interval=0.02)
    assert time.monotonic() - stopped >= 0.3  # not before the holder's key ran out
    assert not first.mine(client)  # and the old holder, back, does not take it again


def test_only_the_window_duty_s_holder_publishes_and_the_duty_passes_on(
    world: tuple[sa.Engine, Any, redis.Redis],
) -> None:
    engine, app, client = world
    ids = _pending(engine, "w", 40)
    holder = RefillLoop(Refiller(engine, app, window=20), duty=Duty("window", hold_seconds=0.5))
    other = RefillLoop(Refiller(engine, app, window=20), duty=Duty("window", hold_seconds=0.5))
    assert holder.tick() == 20
    other._due = 0.0  # due now (the loop's own clock would wait a second)
    assert other.tick() == 0  # the duty is the holder's: nothing taken, nothing published
    client.delete("imgmod")  # the window ran dry, and the holder stopped ticking
    wait_until(
        lambda: (setattr(other, "_due", 0.0), other.tick())[1] == 20,
        5,
        "the other process to take the duty over and refill",
        interval=0.05,
    )
    assert int(client.llen("imgmod")) == 20
    job = store.get_job(engine, "w")
    assert job is not None
    counts = store.state_counts(engine, job.id)
    assert counts["queued"] == len(ids) and counts["pending"] == 0


def test_a_finder_without_the_look_duty_finds_nothing_and_forgets_its_suspects(
    world: tuple[sa.Engine, Any, redis.Redis],
) -> None:
    engine, app, client = world
    (lost,) = _pending(engine, "o", 1)
    job = store.get_job(engine, "o")
    assert job is not None and store.take_pending(engine, job.id, 10) == [lost]  # no message
    held: set[int] = set()
    looker = OrphanFinder(engine, app, duty=Duty("orphans", hold_seconds=60))
    other = OrphanFinder(engine, app, duty=Duty("orphans", hold_seconds=60))
    t0 = 1000.0
    assert looker.look(lambda: held, now=t0) == []  # a suspect from now on
    assert other.look(lambda: held, now=t0) == []
    assert looker.look(lambda: held, now=t0 + ORPHAN_GRACE_S) == [lost]
    assert other.look(lambda: held, now=t0 + ORPHAN_GRACE_S) == []  # not its duty
    client.delete(looker.duty.key if looker.duty else "")  # the looker is gone
    # The other starts afresh: its own suspect now, confirmed a grace later.
    assert other.look(lambda: held, now=t0 + ORPHAN_GRACE_S + 5) == []
    client.delete(f"imgmod:orphan:{lost}")  # the first publisher's claim ran out
    assert other.look(lambda: held, now=t0 + 2 * ORPHAN_GRACE_S + 5) == [lost]
