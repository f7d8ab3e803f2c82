"""Parked answers against real Redis, SQL and Celery workers: an answer is parked only for the
row that paid for it, cleared once stored, and an answer the database refuses fails its row
with the reason instead of being retried forever (and is stored later without a new call)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from tests.support import run_imgmod, running_emulator, wait_until
from worker import store
from worker.attempt import parked_answers
from worker.durable import slot_of
from worker.emulator import TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET
from worker.params import ImageRef
from worker.processes import WorkerProcess, free_port, start_worker
from worker.results import ModerationResponse
from worker.store.answers import (
    ANSWER_TTL_S,
    KEY_PREFIX,
    AnswerSlot,
    ParkedAnswers,
    encode,
)

pytestmark = pytest.mark.service

REFUSE = {
    "sqlite": [
        "CREATE TRIGGER refuse_results BEFORE INSERT ON results "
        "BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse_results() RETURNS trigger AS $$ BEGIN "
        "RAISE EXCEPTION 'refused by a test trigger' USING ERRCODE = '22023'; END $$ "
        "LANGUAGE plpgsql",
        "CREATE TRIGGER refuse_results BEFORE INSERT ON results "
        "FOR EACH ROW EXECUTE FUNCTION refuse_results()",
    ],
}
ALLOW = {
    "sqlite": ["DROP TRIGGER refuse_results"],
    "postgresql": ["DROP TRIGGER refuse_results ON results", "DROP FUNCTION refuse_results()"],
}


def _env(database_url: str, broker_url: str, limiter_url: str, endpoint: str) -> dict[str, str]:
    return {
        "IMGMOD_DATABASE_URL": database_url,
        "IMGMOD_BROKER_URL": broker_url,
        "IMGMOD_LIMITER_URL": limiter_url,
        "IMGMOD_ENDPOINT": endpoint,
        "IMGMOD_QPS": "50",
        "IMGMOD_BACKOFF_BASE": "0.1",
        "IMGMOD_BACKOFF_CAP": "1",
        "ALIBABA_CLOUD_ACCESS_KEY_ID": TEST_ACCESS_KEY_ID,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": TEST_ACCESS_KEY_SECRET,
    }


def _execute(url: str, statements: list[str]) -> None:
    engine = store.make_engine(url)
    try:
        with engine.begin() as conn:
            for sql in statements:
                conn.exec_driver_sql(sql)
    finally:
        engine.dispose()


def _row(url: str, sql: str) -> Any:
    engine = store.make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql)).one_or_none()
    finally:
        engine.dispose()


@pytest.fixture
def shared_redis(redis_url: str) -> Iterator[tuple[str, str, str]]:
    """(limiter, broker A, broker B): one Redis server, the limiter shared, brokers apart."""
    base = redis_url.rsplit("/", 1)[0]
    brokers = (f"{base}/13", f"{base}/14")
    for url in brokers:
        redis.Redis.from_url(url).flushdb()
    yield redis_url, *brokers
    for url in brokers:
        redis.Redis.from_url(url).flushdb()


def test_an_answer_parked_by_one_database_never_completes_another_database_s_item(
    database_url: str,
    tmp_path: Path,
    shared_redis: tuple[str, str, str],
    emulator: Any,
    image_server: Any,
) -> None:
    limiter, broker_a, broker_b = shared_redis
    env_a = _env(database_url, broker_a, limiter, emulator.url)
    env_b = _env(f"sqlite:///{tmp_path / 'b.db'}", broker_b, limiter, emulator.url)
    for env in (env_a, env_b):
        assert run_imgmod(env, "db", "upgrade").returncode == 0
    dialect = store.make_engine(database_url).dialect.name
    workers: list[WorkerProcess] = []
    try:
        # Database A refuses to store the answer (as PostgreSQL refuses a NUL or a NaN): the
        # row fails with the reason at once, and the billed answer stays parked.
        _execute(database_url, REFUSE[dialect])
        src_a = tmp_path / "a.txt"
        src_a.write_text(image_server.image_url(1) + "\n")
        assert run_imgmod(env_a, "enqueue", str(src_a), "--job", "nightly").returncode == 0
        workers.append(start_worker(env_a, tmp_path / "wa.log", concurrency=4, hostname="a@%h"))
        sql_a = "SELECT id, state, last_code, last_message FROM items"
        wait_until(lambda: _row(database_url, sql_a).state == "failed", 60, "A's row to fail")
        failed = _row(database_url, sql_a)
        assert failed.last_code == "unstorable"
        assert "refused by a test trigger" in failed.last_message
        assert "imgmod retry JOB --code unstorable" in failed.last_message
        assert emulator.stats()["billed"] == 1
        assert "Traceback" not in workers[0].log()
        _execute(database_url, ALLOW[dialect])

        # Database B: same job name, same item id, another image; its first attempt was
        # handed back (a 500, say), so its next claim is attempt 2.
        src_b = tmp_path / "b.txt"
        src_b.write_text(image_server.image_url(2) + "\n")
        assert run_imgmod(env_b, "enqueue", str(src_b), "--job", "nightly").returncode == 0
        engine_b = store.make_engine(env_b["IMGMOD_DATABASE_URL"])
        claimed = store.claim_item(engine_b, failed.id, "earlier-attempt", 30)
        assert claimed is not None and claimed.id == failed.id  # the ids collide
        store.record_retry(engine_b, claimed.id, "earlier-attempt", "500", "injected", None)
        engine_b.dispose()
        workers.append(start_worker(env_b, tmp_path / "wb.log", concurrency=4, hostname="b@%h"))
        sql_b = "SELECT state, attempts FROM items"
        wait_until(lambda: _row(env_b["IMGMOD_DATABASE_URL"], sql_b).state == "done", 60, "B")
        assert _row(env_b["IMGMOD_DATABASE_URL"], sql_b).attempts == 2
        # B's image was moderated for B, not completed with A's answer.
        stats = emulator.stats()
        assert stats["billed"] == 2 and len(stats["billed_by_image"]) == 2
        raw_b = _row(env_b["IMGMOD_DATABASE_URL"], "SELECT raw FROM results").raw
        raw_b = json.loads(raw_b) if isinstance(raw_b, str) else raw_b
        assert "recovered" not in workers[1].log()

        # A, once its cause is fixed: the parked answer is stored without a second call.
        retry = run_imgmod(env_a, "retry", "nightly", "--code", "unstorable")
        assert retry.returncode == 0, retry.stderr
        wait_until(lambda: _row(database_url, sql_a).state == "done", 60, "A's row to be done")
        assert "answer recovered, not billed again" in workers[0].log()
        raw_a = _row(database_url, "SELECT raw FROM results").raw
        raw_a = json.loads(raw_a) if isinstance(raw_a, str) else raw_a
        assert raw_a["RequestId"] != raw_b["RequestId"]
        assert emulator.stats()["billed"] == 2
        # Every stored answer's parked copy is gone.
        assert list(redis.Redis.from_url(limiter).scan_iter(f"{KEY_PREFIX}*")) == []
    finally:
        for worker in workers:
            worker.terminate(timeout=30)


def test_a_parked_answer_expires_and_is_found_only_under_its_own_slot(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    parked = ParkedAnswers(client)
    mine = AnswerSlot(
        "job-key-a", 1, 7, "baselineCheck_global", ("u", None, None, None, None, None)
    )
    theirs = AnswerSlot("job-key-b", 1, 7, "baselineCheck_global", mine.reference)
    parked.park(mine, {"Code": 200, "RequestId": "R"})
    assert 0 < client.ttl(mine.key) <= ANSWER_TTL_S
    assert parked.find(theirs) is None
    assert parked.find(mine) == {"Code": 200, "RequestId": "R"}
    parked.clear(mine)
    assert parked.find(mine) is None


def test_an_answer_with_nul_and_nan_is_stored_once_on_postgresql(
    pg_url: str, redis_url: str, image_server: Any, tmp_path: Path
) -> None:
    """The service's answer itself carries a NUL in OCR text and NaN/Infinity numbers."""
    url = image_server.image_url(3)
    rules = tmp_path / "rules.json"
    # Python's json writes NaN and Infinity as the bare words a lenient service might send.
    data = {
        "RiskLevel": "high",
        "Result": [{"Label": "contraband_drug", "Confidence": float("nan")}],
        "Ext": {"TextInImage": {"OcrResult": [{"Text": "buy\x00now"}], "Score": float("inf")}},
    }
    rules.write_text(json.dumps([{"url": url, "data": data}]))
    with running_emulator(qps=50, latency_ms=5, rules=str(rules)) as emulator:
        env = _env(pg_url, redis_url, redis_url, emulator.url)
        env["IMGMOD_INFO_TYPE"] = "textInImage"
        assert run_imgmod(env, "db", "upgrade").returncode == 0
        src = tmp_path / "nul.txt"
        src.write_text(url + "\n")
        worker = start_worker(env, tmp_path / "w.log", concurrency=4)
        try:
            run = run_imgmod(env, "run", str(src), "--job", "nul", timeout=120)
            assert run.returncode == 0, run.stdout + run.stderr + worker.log()[-3000:]
        finally:
            worker.terminate(timeout=30)
        assert emulator.stats()["billed"] == 1
    result = _row(pg_url, "SELECT ext, raw FROM results")
    assert result.ext["TextInImage"]["OcrResult"] == [{"Text": "buynow"}]
    assert result.ext["TextInImage"]["Score"] == "Infinity"
    assert result.raw["Data"]["Result"][0]["Confidence"] == "NaN"
    assert "database unavailable" not in worker.log()


def _claimed(item_id: int, job_key: str = "job-key-a") -> store.ClaimedItem:
    return store.ClaimedItem(
        id=item_id,
        job_id=1,
        kind="url",
        ref=ImageRef(image_url=f"http://127.0.0.1:9/{item_id}.png"),
        attempts=1,
        service="baselineCheck_global",
        info_type="",
        job_key=job_key,
    )


def test_a_message_s_parked_answers_are_looked_up_in_one_round_trip(redis_url: str) -> None:
    """The task looks up its message's rows at once (worker.attempt.parked_answers): each row
    gets its own answer or None, a foreign answer under a row's key is not its answer, and
    the look-up is a single MGET (counted by the server)."""
    client = redis.Redis.from_url(redis_url)
    rt = SimpleNamespace(answers=ParkedAnswers(client))
    items = [_claimed(i) for i in (101, 102, 103)]
    parked = ParkedAnswers(client)
    parked.park(slot_of(items[0]), {"Code": 200, "RequestId": "R-101"})
    # Another job's answer under the key of item 103 (a colliding key): not item 103's.
    foreign = slot_of(_claimed(103, job_key="job-key-b"))
    client.set(slot_of(items[2]).key, encode(foreign, {"Code": 200, "RequestId": "R-x"}))
    before = client.info("commandstats").get("cmdstat_mget", {}).get("calls", 0)
    try:
        found = parked_answers(rt, items)  # type: ignore[arg-type]  # its answers are real
        after = client.info("commandstats")["cmdstat_mget"]["calls"]
    finally:
        parked.clear(*(slot_of(item) for item in items))
    assert after - before == 1
    first = found[101]
    assert isinstance(first, ModerationResponse) and first.request_id == "R-101"
    assert found[102] is None and found[103] is None


def test_a_message_s_look_up_with_redis_away_leaves_each_row_to_ask_itself() -> None:
    """Redis away at the message's look-up decides nothing: no entry, so each row asks on
    its own in attempt() and is handed back there, as a row of a one-id message is."""
    away = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    rt = SimpleNamespace(answers=ParkedAnswers(away))
    assert parked_answers(rt, [_claimed(1), _claimed(2)]) == {}  # type: ignore[arg-type]
