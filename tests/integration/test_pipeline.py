"""Whole jobs through real processes: `imgmod run`, Celery workers, Redis, the emulator, SQL."""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from tests.support import run_imgmod, wait_until
from worker import store
from worker.emulator.answers import expected_answer
from worker.emulator.samples import sample_bytes_for_path

pytestmark = pytest.mark.service

INFO = "customImage,textInImage,publicFigure,logoData"


def _rows(url: str, sql: str) -> list[sa.Row]:
    engine = store.make_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(sql)))
    finally:
        engine.dispose()


def test_mixed_job_ends_with_every_reference_in_its_terminal_state(pipeline) -> None:
    img = pipeline.images
    base = img.url
    good = [img.image_url(i, ["png", "jpg", "gif", "bmp", "webp"][i % 5]) for i in range(40)]
    lines = ["# a mixed archive", "", *good, *good[:5]]  # 5 duplicates
    lines += [f"{base}/missing/{i}.png" for i in range(3)]
    lines += [f"{base}/text/{i}.txt" for i in range(3)]
    lines += [f"{base}/slow/{i}.png?ms=2500" for i in range(2)]
    lines += ["ftp://example.com/x.png", "javascript:alert(1)", base + "/img/" + "a" * 2100]
    src = pipeline.write("urls.txt", lines)
    pipeline.start_worker()

    run = pipeline.imgmod("run", str(src), "--job", "mixed", "--stall-seconds", "60")

    assert run.returncode == 3, run.stdout + run.stderr
    assert "48 accepted, 5 duplicate, 3 rejected" in run.stdout
    status = json.loads(pipeline.imgmod("status", "mixed", "--json", check=True).stdout)
    states = {k: v for k, v in status["states"].items() if v}
    assert states == {"done": 40, "failed": 8, "rejected": 3}

    db = pipeline.env["IMGMOD_DATABASE_URL"]
    failed = _rows(db, "SELECT image_url, last_code, attempts FROM items WHERE state='failed'")
    codes = {}
    for url, code, attempts in failed:
        codes.setdefault(urlsplit(url).path.split("/")[1], set()).add(code)
        if code == "405":
            assert attempts == 2  # IMGMOD_RETRY_PER_CODE=405=2
    assert codes == {"missing": {"404"}, "text": {"407"}, "slow": {"405"}}
    rejected = _rows(db, "SELECT line, last_error FROM items WHERE state='rejected' ORDER BY line")
    assert [r.line for r in rejected] == [56, 57, 58]
    assert rejected[0].last_error.startswith("line 56: imageUrl:")
    assert "2048" in rejected[2].last_error

    # every stored answer is exactly the emulator's answer for those bytes
    stored = _rows(db, "SELECT i.image_url, r.raw FROM items i JOIN results r ON r.item_id=i.id")
    assert len(stored) == 40
    for url, raw in stored:
        raw = raw if isinstance(raw, dict) else json.loads(raw)
        image = sample_bytes_for_path(urlsplit(url).path)
        assert raw["Code"] == 200
        assert raw["Data"] == expected_answer(image, None, INFO)
    labels = _rows(db, "SELECT count(*) FROM result_labels")[0][0]
    assert labels >= 40

    stats = pipeline.emulator.stats()
    assert stats["billed"] == 40
    assert max(stats["billed_by_image"].values()) == 1


def test_two_workers_on_one_job_bill_nothing_twice(pipeline) -> None:
    urls = [pipeline.images.image_url(i) for i in range(300)]
    src = pipeline.write("many.txt", urls)
    pipeline.start_worker(concurrency=16)
    pipeline.start_worker(concurrency=16)

    run = pipeline.imgmod("run", str(src), "--job", "two")

    assert run.returncode == 0, run.stdout + run.stderr
    stats = pipeline.emulator.stats()
    assert stats["billed"] == 300
    assert set(stats["billed_by_image"].values()) == {1}
    # A stored row forgets its lease owner; each worker's outcome lines say which rows it did.
    done_by = [
        {int(n) for n in re.findall(r"item=(\d+) code=200 ", w.log())} for w in pipeline.workers
    ]
    assert all(done_by), [len(items) for items in done_by]  # both workers moderated images
    assert not done_by[0] & done_by[1]  # and no row twice
    assert len(done_by[0] | done_by[1]) == 300


def test_redelivered_messages_for_done_rows_are_not_billed_again(pipeline, redis_url) -> None:
    import redis

    src = pipeline.write("few.txt", [pipeline.images.image_url(i) for i in range(20)])
    pipeline.start_worker()
    assert pipeline.imgmod("run", str(src), "--job", "again").returncode == 0
    assert pipeline.emulator.stats()["billed"] == 20

    # publish every id once more, as a broker redelivery would
    resume = pipeline.imgmod("retry", "again")  # no failed rows: nothing re-queued
    assert "re-queued 0" in resume.stdout
    import os

    from worker.app import make_app
    from worker.queue import publish_ids
    from worker.settings import load_settings

    old = dict(os.environ)
    os.environ.update(pipeline.env)
    try:
        app = make_app(load_settings())
        engine = store.make_engine(pipeline.env["IMGMOD_DATABASE_URL"])
        ids = [r[0] for r in _rows(pipeline.env["IMGMOD_DATABASE_URL"], "SELECT id FROM items")]
        publish_ids(app, ids)
        engine.dispose()
    finally:
        os.environ.clear()
        os.environ.update(old)
    r = redis.Redis.from_url(redis_url)
    wait_until(
        lambda: r.llen("imgmod") == 0 and r.hlen("unacked") == 0,
        30,
        "the redelivered messages to be consumed",
    )
    assert pipeline.emulator.stats()["billed"] == 20


def test_enqueue_twice_adds_nothing(pipeline) -> None:
    src = pipeline.write("once.txt", [pipeline.images.image_url(i) for i in range(10)] + ["bad"])
    first = pipeline.imgmod("enqueue", str(src), "--job", "twice", check=True)
    second = pipeline.imgmod("enqueue", str(src), "--job", "twice", check=True)
    assert "10 accepted, 0 duplicate, 1 rejected" in first.stdout
    assert "0 accepted, 10 duplicate, 1 rejected" in second.stdout
    status = json.loads(pipeline.imgmod("status", "twice", "--json", check=True).stdout)
    assert sum(status["states"].values()) == 11


def test_unmigrated_postgres_database_is_refused_with_the_fix(pg_url, tmp_path) -> None:
    out = run_imgmod({"IMGMOD_DATABASE_URL": pg_url}, "status", timeout=60)
    assert out.returncode == 2
    assert "imgmod db upgrade" in out.stderr
