"""`imgmod retry` puts failed rows back in line through the publishing window, like an enqueue:
a retry of more failed rows than IMGMOD_QUEUE_WINDOW leaves at most the window in Redis and the
rest pending in SQL for the workers' refills."""

from __future__ import annotations

import pytest
import redis
import sqlalchemy as sa

from tests.support import run_imgmod
from worker import store
from worker.queue import message_item_ids

pytestmark = pytest.mark.service


def _job_with_failed_rows(url: str, n: int) -> int:
    store.upgrade(url)
    engine = store.make_engine(url)
    try:
        job = store.get_or_create_job(engine, "again", "baselineCheck_global", "")
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
                source="in.txt",
                line=i + 1,
                state="pending",
            )
            for i in range(n)
        ]
        store.insert_items(engine, job.id, rows)
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE items SET state = 'failed', last_code = '404'"))
        return job.id
    finally:
        engine.dispose()


def test_a_retry_larger_than_the_window_publishes_only_the_window(
    sqlite_url: str, redis_url: str
) -> None:
    window, failed = 10, 35
    job_id = _job_with_failed_rows(sqlite_url, failed)
    env = {
        "IMGMOD_DATABASE_URL": sqlite_url,
        "IMGMOD_BROKER_URL": redis_url,
        "IMGMOD_QUEUE_WINDOW": str(window),
        "IMGMOD_IDS_PER_MESSAGE": "8",
    }

    out = run_imgmod(env, "retry", "again", "--code", "404", timeout=60)

    assert out.returncode == 0, out.stdout + out.stderr
    assert f"re-queued {failed} failed references" in out.stdout
    assert f"{failed - window} references wait in the database" in out.stderr
    broker = redis.Redis.from_url(redis_url)
    try:  # the window counts rows: 10 ids, in messages of IMGMOD_IDS_PER_MESSAGE (8) and 2
        messages = broker.lrange("imgmod", 0, -1)
        assert sum(len(message_item_ids(m)) for m in messages) == window
        assert len(messages) == 2
    finally:
        broker.close()
    engine = store.make_engine(sqlite_url)
    try:
        counts = store.state_counts(engine, job_id)
    finally:
        engine.dispose()
    assert counts["queued"] == window and counts["pending"] == failed - window
    assert counts["failed"] == 0
