"""The publishing window: a job of any size keeps at most IMGMOD_QUEUE_WINDOW messages in Redis,
the workers refill it from SQL, and no row is ever handed to two refillers."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from tests.support import wait_until
from worker import store
from worker.orphans import ORPHAN_GRACE_S
from worker.processes import private_redis

pytestmark = pytest.mark.service


def _pending_rows(engine: Any, job_id: int, n: int) -> None:
    rows = [
        store.NewItem(
            kind="url",
            ref_key=f"http://127.0.0.1:9/{i}.png",
            image_url=f"http://127.0.0.1:9/{i}.png",
            oss_bucket=None,
            oss_object=None,
            oss_region=None,
            data_id=None,
            referer=None,
            source="t.txt",
            line=i,
            state="pending",
        )
        for i in range(n)
    ]
    for start in range(0, n, 2000):
        store.insert_items(engine, job_id, rows[start : start + 2000])


class _QueueWatch:
    """Polls LLEN of the broker queue from a thread and keeps the largest value seen."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.largest = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.largest = max(self.largest, int(self.client.llen("imgmod")))
            self.samples += 1

    def __enter__(self) -> _QueueWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.close()


def test_a_job_far_larger_than_the_window_completes_with_the_queue_never_above_it(
    pipeline: Any,
) -> None:
    """`imgmod enqueue` fills the window and exits; from then on only the worker's own refill
    thread publishes the rest, and the broker never holds more than the window."""
    window, images = 60, 600
    src = pipeline.write("big.txt", [pipeline.images.image_url(i, "png") for i in range(images)])
    engine = store.make_engine(pipeline.env["IMGMOD_DATABASE_URL"])
    try:
        with _QueueWatch(pipeline.env["IMGMOD_BROKER_URL"]) as watch:
            enqueued = pipeline.imgmod(
                "enqueue", str(src), "--job", "big", IMGMOD_QUEUE_WINDOW=str(window)
            )
            assert enqueued.returncode == 0, enqueued.stdout + enqueued.stderr
            assert f"{images - window} references wait in the database" in enqueued.stderr
            job = store.get_job(engine, "big")
            assert job is not None
            assert store.state_counts(engine, job.id)["queued"] == window
            pipeline.start_worker(concurrency=8, IMGMOD_QUEUE_WINDOW=str(window))
            wait_until(
                lambda: store.state_counts(engine, job.id)["done"] == images,
                180,
                f"{images} done rows",
                interval=0.2,
            )
        with engine.connect() as conn:
            billed = Counter(r.item_id for r in conn.execute(sa.select(store.results.c.item_id)))
    finally:
        engine.dispose()

    assert watch.samples > 100
    assert 0 < watch.largest <= window, watch.largest
    assert len(billed) == images and set(billed.values()) == {1}
    assert pipeline.emulator.stats()["billed"] == images


def test_after_the_broker_lost_the_window_resume_brings_a_larger_job_home(pipeline: Any) -> None:
    """The broker is flushed mid-job: the workers' refills go on publishing the pending rows,
    the rows whose messages were lost stay queued until `imgmod resume` puts them back in line,
    and nothing is billed twice."""
    window, images = 40, 240
    pipeline.emulator.configure(latency_ms=150)
    src = pipeline.write("lost.txt", [pipeline.images.image_url(i, "png") for i in range(images)])
    engine = store.make_engine(pipeline.env["IMGMOD_DATABASE_URL"])
    broker = redis.Redis.from_url(pipeline.env["IMGMOD_BROKER_URL"])
    # One id per message: the window's 40 rows are then 40 messages, far more than the 8
    # threads hold, so the flush loses some. At 8 per message the threads hold all 5 of them
    # and nothing is lost (tests/faults/test_broker_loss.py covers resume at the default).
    env = {"IMGMOD_QUEUE_WINDOW": str(window), "IMGMOD_IDS_PER_MESSAGE": "1"}
    try:
        pipeline.start_worker(concurrency=8, **env)
        assert pipeline.imgmod("enqueue", str(src), "--job", "lost", **env).returncode == 0
        job = store.get_job(engine, "lost")
        assert job is not None

        def counts() -> dict[str, int]:
            return store.state_counts(engine, job.id)

        wait_until(lambda: counts()["done"] >= 20, 60, "the job to be under way")
        broker.flushall()
        flushed_at = time.monotonic()
        wait_until(
            lambda: counts()["pending"] == 0 and counts()["running"] == 0,
            120,
            "the refills to publish every pending row, and the calls in flight to land",
        )
        lost = counts()["queued"]
        # About the window, plus what the worker's 8 threads had reserved when the flush hit (seen
        # under loaded CI boxes: 48 and 50 with window 40; why more than window + 8 is not yet
        # explained). The hard bound on Redis is held by
        # test_a_job_far_larger_than_the_window_completes_with_the_queue_never_above_it.
        assert lost <= 2 * window, counts()
        if time.monotonic() - flushed_at < ORPHAN_GRACE_S:
            # Before the orphan finder's grace, the lost rows can only still be waiting.
            assert lost > 0, counts()

        resumed = pipeline.imgmod("resume", "lost", **env)
        # A live worker's orphan finder may republish some of them meanwhile (on a loaded box the
        # wait above can outlast its grace): resume puts back at most what was lost, never more.
        again = re.search(r"re-enqueued (\d+) references", resumed.stdout)
        assert again is not None and int(again.group(1)) <= lost, resumed.stdout + resumed.stderr
        wait_until(lambda: counts()["done"] == images, 120, f"{images} done rows")
    finally:
        broker.close()
        engine.dispose()

    stats = pipeline.emulator.stats()
    assert stats["billed"] == images and set(stats["billed_by_image"].values()) == {1}


def test_concurrent_refillers_never_take_the_same_row(database_url: str) -> None:
    """Four takers, each with its own connection pool like four processes, race over 4,000
    pending rows: every row is handed out exactly once."""
    store.upgrade(database_url)
    engine = store.make_engine(database_url)
    job = store.get_or_create_job(engine, "race", "baselineCheck_global", "")
    _pending_rows(engine, job.id, 4000)
    taken: list[list[int]] = [[] for _ in range(4)]
    sizes: list[int] = []
    start = threading.Barrier(4)

    def take(slot: int) -> None:
        own = store.make_engine(database_url)
        try:
            start.wait()
            while ids := store.take_pending(own, job.id, 37):
                taken[slot].extend(ids)
                sizes.append(len(ids))
        finally:
            own.dispose()

    threads = [threading.Thread(target=take, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    counts = store.state_counts(engine, job.id)
    engine.dispose()

    every = [i for ids in taken for i in ids]
    assert len(every) == len(set(every)) == 4000
    assert max(sizes) == 37  # a take never exceeds its limit
    assert counts["queued"] == 4000 and counts["pending"] == 0


def test_a_refill_that_redis_refuses_leaves_no_queued_row_without_a_message(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis at its maxmemory (noeviction) refuses the LPUSH halfway: the rows of the refused
    batch go back to pending, so every queued row still has its message."""
    from worker.app import make_app
    from worker.queue import BrokerFull
    from worker.settings import load_settings
    from worker.window import Refiller

    with private_redis() as server:
        client = redis.Redis.from_url(server.url)
        monkeypatch.setenv("IMGMOD_BROKER_URL", server.url)
        app = make_app(load_settings())
        engine = store.ensure_schema(sqlite_url)
        job = store.get_or_create_job(engine, "full", "baselineCheck_global", "")
        _pending_rows(engine, job.id, 12000)
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", used + 3_000_000)  # room for ~3,000 messages

        with pytest.raises(BrokerFull, match="IMGMOD_QUEUE_WINDOW"):
            Refiller(engine, app, window=12000).top_up()
        counts = store.state_counts(engine, job.id)
        in_broker = int(client.llen("imgmod"))
        engine.dispose()
        client.close()

    assert 0 < in_broker < 12000
    assert counts["queued"] == in_broker, (counts, in_broker)
    assert counts["pending"] == 12000 - in_broker
