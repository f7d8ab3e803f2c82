"""Worker metrics: the Metrics object, the SQL-backed gauge, and a real job scraped over HTTP."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from tests.support import wait_until
from worker import store
from worker.emulator import TEST_ACCESS_KEY_SECRET
from worker.metrics import (
    NULL_METRICS,
    ItemStateCollector,
    Metrics,
    job_state_counts,
    metrics_for,
)
from worker.processes import free_port

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as response:  # our own loopback endpoint
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {dict(k)[label]: v for (n, k), v in samples.items() if n == name and v}


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    m = Metrics()
    yield m
    m.stop()


def _value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


# ---------------------------------------------------------------- the object


def test_metrics_off_is_the_shared_no_op() -> None:
    rec = metrics_for(0)
    assert rec is NULL_METRICS
    with rec.in_flight():
        rec.observe_call(200, 0.1)
    rec.observe_wait(0.1)
    rec.retry("403")
    rec.billed()


def test_events_land_in_their_series(metrics: Metrics) -> None:
    metrics.observe_call(200, 0.12)
    metrics.observe_call("405", 3.2)
    metrics.observe_call(None, 10.5)
    metrics.retry("405")
    metrics.billed()
    metrics.observe_wait(0.02)
    metrics.observe_wait(0.03, late=0.012)  # left 12 ms after its slot
    with metrics.in_flight():
        assert _value(metrics, "imgmod_in_flight_calls") == 1
    assert _value(metrics, "imgmod_in_flight_calls") == 0
    assert _value(metrics, "imgmod_api_calls_total", code="200") == 1
    assert _value(metrics, "imgmod_api_calls_total", code="405") == 1
    assert _value(metrics, "imgmod_api_calls_total", code="transport") == 1
    assert _value(metrics, "imgmod_retries_total", code="405") == 1
    assert _value(metrics, "imgmod_billed_calls_total") == 1
    assert _value(metrics, "imgmod_api_latency_seconds_count") == 3
    assert _value(metrics, "imgmod_api_latency_seconds_bucket", le="0.2") == 1
    assert _value(metrics, "imgmod_api_latency_seconds_bucket", le="5.0") == 2
    assert _value(metrics, "imgmod_limiter_wait_seconds_count") == 2
    assert _value(metrics, "imgmod_call_lateness_seconds_count") == 2
    assert _value(metrics, "imgmod_call_lateness_seconds_bucket", le="0.01") == 1
    assert _value(metrics, "imgmod_call_lateness_seconds_bucket", le="0.015") == 2


def test_serving_twice_in_one_process_starts_one_server(metrics: Metrics) -> None:
    port = free_port()
    assert metrics.serve("127.0.0.1", port)
    assert metrics.serve("127.0.0.1", port)
    metrics.billed()
    assert scrape(f"http://127.0.0.1:{port}/metrics")[("imgmod_billed_calls_total", frozenset())]


def test_a_taken_port_leaves_the_worker_running_without_metrics(metrics: Metrics, caplog) -> None:
    port = free_port()
    assert metrics.serve("127.0.0.1", port)
    other = Metrics()
    assert other.serve("127.0.0.1", port) is False
    assert "own IMGMOD_METRICS_PORT" in caplog.text


def test_limiter_rate_is_read_at_scrape_time(metrics: Metrics) -> None:
    rates = iter([98.0, 49.0])
    metrics.watch_limiter(lambda: next(rates), ttl=0)
    metrics.watch_limiter(lambda: 1.0)  # a second watch is ignored
    assert _value(metrics, "imgmod_limiter_rate") == 98.0
    assert _value(metrics, "imgmod_limiter_rate") == 49.0


# ---------------------------------------------------------------- rows by state, from SQL


def _job_with_items(url: str, name: str, n: int) -> tuple[sa.Engine, store.Job]:
    store.upgrade(url)
    engine = store.make_engine(url)
    job = store.get_or_create_job(engine, name, "baselineCheck_global", "")
    rows = [
        store.NewItem(
            "url", f"k{i}", f"http://x/{i}.png", None, None, None, None, None, "t", i, "pending"
        )
        for i in range(n)
    ]
    store.insert_items(engine, job.id, rows)
    return engine, job


def _set_state(engine: sa.Engine, state: str, limit: int) -> None:
    with engine.begin() as conn:
        ids = conn.execute(sa.select(store.items.c.id).limit(limit)).scalars().all()
        conn.execute(sa.update(store.items).where(store.items.c.id.in_(ids)).values(state=state))


@pytest.mark.service
def test_items_gauge_counts_rows_per_state_and_caches_between_scrapes(database_url: str) -> None:
    engine, _ = _job_with_items(database_url, "gauge", 5)
    cached, fresh = Metrics(), Metrics()
    cached.watch_store(lambda: engine, ttl=3600)
    fresh.watch_store(lambda: engine, ttl=0)
    assert _value(cached, "imgmod_items", imgmod_job="gauge", state="pending") == 5
    _set_state(engine, "done", 2)
    assert _value(cached, "imgmod_items", imgmod_job="gauge", state="pending") == 5  # cached
    assert _value(fresh, "imgmod_items", imgmod_job="gauge", state="pending") == 3
    assert _value(fresh, "imgmod_items", imgmod_job="gauge", state="done") == 2
    engine.dispose()


@pytest.mark.service
def test_items_gauge_leaves_out_jobs_finished_more_than_a_day_ago(sqlite_url: str) -> None:
    engine, job = _job_with_items(sqlite_url, "old", 2)
    _set_state(engine, "done", 2)
    assert store.finish_job_if_complete(engine, job.id)
    assert {row[0] for row in job_state_counts(engine)} == {"old"}
    later = datetime.now(timezone.utc) + timedelta(days=2)
    assert job_state_counts(engine, now=later) == []
    engine.dispose()


def test_items_gauge_survives_an_unreachable_database() -> None:
    def broken() -> Any:
        return sa.create_engine(f"postgresql://nobody@127.0.0.1:{free_port()}/none")

    collector = ItemStateCollector(broken, ttl=0)
    (family,) = list(collector.collect())
    assert family.samples == []


# ---------------------------------------------------------------- a real job


@pytest.mark.service
def test_scraped_counters_match_what_the_emulator_saw_and_billed(pipeline) -> None:
    img = pipeline.images
    lines = [img.image_url(i) for i in range(20)]
    lines += [f"{img.url}/missing/{i}.png" for i in range(2)]  # 404, final
    lines += [f"{img.url}/slow/0.png?ms=2500"]  # 405, retried once (405=2), then final
    src = pipeline.write("urls.txt", lines)
    port = free_port()
    pipeline.start_worker(IMGMOD_METRICS_PORT=str(port))
    url = f"http://127.0.0.1:{port}/metrics"
    socket.create_connection(("127.0.0.1", port), timeout=5).close()  # up before any task

    run = pipeline.imgmod("run", str(src), "--job", "scraped", "--stall-seconds", "30")
    assert run.returncode == 3, run.stdout + run.stderr

    emu = pipeline.emulator.stats()
    samples = scrape(url)
    assert samples[("imgmod_billed_calls_total", frozenset())] == emu["billed"] == 20
    assert by_label(samples, "imgmod_api_calls_total", "code") == {
        code: float(n) for code, n in emu["by_code"].items()
    }
    assert by_label(samples, "imgmod_retries_total", "code").get("405") == 1
    calls = float(emu["calls"])
    assert samples[("imgmod_api_latency_seconds_count", frozenset())] == calls
    assert samples[("imgmod_limiter_wait_seconds_count", frozenset())] == calls
    assert samples[("imgmod_call_lateness_seconds_count", frozenset())] == calls
    assert samples[("imgmod_in_flight_calls", frozenset())] == 0
    assert samples[("imgmod_limiter_rate", frozenset())] > 0

    def items_settled() -> bool:
        states = by_label(
            {k: v for k, v in scrape(url).items() if ("imgmod_job", "scraped") in k[1]},
            "imgmod_items",
            "state",
        )
        return states == {"done": 20.0, "failed": 3.0}

    wait_until(items_settled, 60, "imgmod_items to show the finished job", interval=1)


@pytest.mark.service
def test_json_logs_give_each_outcome_its_fields_and_never_the_secret(pipeline) -> None:
    img = pipeline.images
    src = pipeline.write(
        "urls.txt", [img.image_url(i) for i in range(3)] + [f"{img.url}/missing/1.png"]
    )
    # 404=1: one attempt for the missing image (404 is retried once by default), so each
    # reference logs exactly one outcome line.
    worker = pipeline.start_worker(IMGMOD_LOG_FORMAT="json", IMGMOD_RETRY_PER_CODE="404=1")
    run = pipeline.imgmod("run", str(src), "--job", "jsonlogs", "--stall-seconds", "30")
    assert run.returncode == 3, run.stdout + run.stderr

    text = worker.log()
    assert TEST_ACCESS_KEY_SECRET not in text
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert any(r["message"].endswith(" ready.") for r in records)
    outcomes = [r for r in records if r["logger"] == "imgmod.task" and "code" in r]
    assert sorted(r["code"] for r in outcomes) == ["200", "200", "200", "404"]
    for r in outcomes:
        assert {"ts", "level", "job", "item", "attempts", "request_id"} <= set(r)
        assert r["attempts"] == 1 and r["request_id"]
    assert len({r["item"] for r in outcomes}) == 4
