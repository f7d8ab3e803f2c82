"""Batch publishing: messages Celery would write itself, each id run by a worker exactly once."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator

import pytest
import redis
import sqlalchemy as sa

from tests.support import wait_until
from worker import store
from worker.app import make_app
from worker.processes import private_redis
from worker.queue import TASK_NAME, publish_ids
from worker.settings import load_settings

pytestmark = pytest.mark.service

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _shape(message: bytes) -> str:
    """The message with every uuid (task id, delivery tag, reply queue) blanked."""
    return UUID.sub("<uuid>", json.dumps(json.loads(message), sort_keys=True))


@pytest.fixture
def broker_url() -> Iterator[str]:
    """A Redis of our own: these tests read the queue back, and db 15 is flushed by others."""
    with private_redis() as server:
        yield server.url


def test_batched_message_is_the_message_send_task_writes(broker_url, monkeypatch) -> None:
    monkeypatch.setenv("IMGMOD_BROKER_URL", broker_url)
    app = make_app(load_settings())
    with app.producer_or_acquire() as producer:
        app.send_task(TASK_NAME, args=(4242,), producer=producer)
    publish_ids(app, [4242])

    client = redis.Redis.from_url(broker_url)
    by_send_task, by_batch = client.lrange(app.conf.task_default_queue, 0, -1)[::-1]
    assert _shape(by_batch) == _shape(by_send_task)
    ids = {json.loads(m)["headers"]["id"] for m in (by_send_task, by_batch)}
    assert len(ids) == 2  # a fresh task id per message


def test_a_message_of_several_ids_is_the_message_send_task_writes(broker_url, monkeypatch) -> None:
    monkeypatch.setenv("IMGMOD_BROKER_URL", broker_url)
    app = make_app(load_settings())
    with app.producer_or_acquire() as producer:
        app.send_task(TASK_NAME, args=(41, 42, 43), producer=producer)
    publish_ids(app, [41, 42, 43, 44], per_message=3)

    client = redis.Redis.from_url(broker_url)
    by_send_task, first, last = client.lrange(app.conf.task_default_queue, 0, -1)[::-1]
    assert _shape(first) == _shape(by_send_task)
    assert json.loads(first)["headers"]["argsrepr"] == "(41, 42, 43)"
    assert json.loads(last)["headers"]["argsrepr"] == "(44,)"  # the rest, in a shorter one


def test_batch_delivers_messages_in_order_with_distinct_task_ids(broker_url, monkeypatch) -> None:
    monkeypatch.setenv("IMGMOD_BROKER_URL", broker_url)
    app = make_app(load_settings())
    publish_ids(app, list(range(1, 26)), batch_size=10)

    client = redis.Redis.from_url(broker_url)
    queue = app.conf.task_default_queue
    consumed = [json.loads(client.rpop(queue)) for _ in range(client.llen(queue))]
    assert [m["headers"]["argsrepr"] for m in consumed] == [f"({i},)" for i in range(1, 26)]
    assert len({m["headers"]["id"] for m in consumed}) == 25


def test_worker_runs_every_id_of_a_batch_exactly_once(pipeline, monkeypatch) -> None:
    images = [pipeline.images.image_url(i, "png") for i in range(120)]
    src = pipeline.write("batch.txt", images)
    pipeline.start_worker(concurrency=16)

    enqueued = pipeline.imgmod("enqueue", str(src), "--job", "batch")
    assert enqueued.returncode == 0, enqueued.stdout + enqueued.stderr

    db = pipeline.env["IMGMOD_DATABASE_URL"]
    engine = store.make_engine(db)
    try:
        job = store.get_job(engine, "batch")
        assert job is not None
        wait_until(
            lambda: store.state_counts(engine, job.id).get("done", 0) == 120, 120, "120 done rows"
        )
        # The same ids published again, in odd-sized batches: claimed as done, never billed.
        monkeypatch.setenv("IMGMOD_BROKER_URL", pipeline.env["IMGMOD_BROKER_URL"])
        with engine.connect() as conn:
            ids = [r.id for r in conn.execute(sa.select(store.items.c.id))]
            results = Counter(r.item_id for r in conn.execute(sa.select(store.results)))
        publish_ids(make_app(load_settings()), ids, batch_size=7)
        queue = redis.Redis.from_url(pipeline.env["IMGMOD_BROKER_URL"])
        wait_until(
            lambda: queue.llen("imgmod") == 0 and queue.hlen("unacked") == 0,
            60,
            "the republished batch to be consumed and acknowledged",
        )
    finally:
        engine.dispose()

    assert sorted(results) == sorted(ids) and set(results.values()) == {1}
    stats = pipeline.emulator.stats()
    assert stats["billed"] == 120
    assert set(stats["billed_by_image"].values()) == {1}
