"""The dry run of a job of several services agrees with what the run does: against the rows a
real enqueue inserts (SQLite and PostgreSQL), and against the emulator's billing count (the
dry run bills 0; the run then bills what the dry run said, per service). ``imgmod doctor``
probes each configured service, billing nothing.

The pure side (JSON and text shapes, refusals, costs): tests/unit/test_dryrun_services.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.support import running_emulator
from worker import producer, store
from worker.doctor import render, run_checks
from worker.dryrun import Estimate, estimate, price
from worker.emulator import TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET
from worker.prices import Prices
from worker.results import parse_response
from worker.sources import read_inputs

pytestmark = pytest.mark.service

BASE = "baselineCheck_global"
AIGC = "aigcDetector_global"
BOTH = f"{BASE},{AIGC}"
VENDOR = Path(__file__).resolve().parent.parent / "data" / "vendor"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def _enqueue(engine: sa.Engine, name: str, services: str, inputs: list[str]) -> store.Job:
    job = store.get_or_create_job(engine, name, services.split(","), "")
    producer.enqueue_records(
        engine,
        job,
        read_inputs(inputs),
        lambda: 0,
        reuse=producer.reuse_scope(job, rescan=False, reuse_urls=True),
    )
    return job


def _answer_pending(engine: sa.Engine, job: store.Job) -> None:
    body = (VENDOR / "response_no_risk.json").read_text(encoding="utf-8")
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(store.items.c.id, store.items.c.service).where(
                store.items.c.job_id == job.id, store.items.c.state == "pending"
            )
        ).all()
    for item_id, service in rows:
        raw = json.loads(body)
        raw["RequestId"] = f"R{item_id}"
        store.record_result(engine, item_id, "w", service, parse_response(json.dumps(raw), 200))


def _what_the_insert_did(engine: sa.Engine, job_id: int) -> dict[str, dict[str, int]]:
    """Per service: rows that will be called, that took a stored answer, that wait."""
    items = store.items.c
    out: dict[str, dict[str, int]] = {}
    with engine.connect() as conn:
        for service, reused, waits, state in conn.execute(
            sa.select(items.service, items.reused_from, items.waits_for, items.state).where(
                items.job_id == job_id, items.state != "rejected"
            )
        ):
            mine = out.setdefault(service, {"called": 0, "reused": 0, "waiting": 0})
            if reused is not None:
                mine["reused"] += 1
            elif waits is not None:
                mine["waiting"] += 1
            else:
                assert state == "pending"
                mine["called"] += 1
    return out


@pytest.mark.parametrize("rescan", [False, True])
def test_the_estimate_per_service_is_what_the_enqueue_inserts(
    engine: sa.Engine, tmp_path: Path, rescan: bool
) -> None:
    urls = [f"https://example.com/{i}.png" for i in range(12)]
    old, flying, new = (tmp_path / n for n in ("old.txt", "flying.txt", "new.txt"))
    old.write_text("\n".join(urls[:4]) + "\n")  # answered by baselineCheck only
    flying.write_text("\n".join(urls[3:6]) + "\n")  # open under aigcDetector: in flight
    new.write_text("\n".join([*urls, urls[0], "ftp://example.com/x.png"]) + "\n")
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.png").write_bytes(PNG)
    (folder / "copy-of-a.png").write_bytes(PNG)  # waits for a's answer, per service
    (folder / "b.png").write_bytes(PNG + b"b")
    _answer_pending(engine, _enqueue(engine, "old", BASE, [str(old)]))
    _enqueue(engine, "flying", AIGC, [str(flying)])
    inputs = [str(new), str(folder)]

    job = store.get_or_create_job(engine, "both", (BASE, AIGC), "")
    scope = producer.reuse_scope(job, rescan=rescan, reuse_urls=True)
    said = price(
        estimate(
            Estimate("both", job.services), [list(read_inputs(inputs))], engine, job.id, scope
        ),
        Prices(),
        100,
    )
    done = producer.enqueue_records(engine, job, read_inputs(inputs), lambda: 0, reuse=scope)
    did = _what_the_insert_did(engine, job.id)

    assert (said.lines, said.accepted, said.duplicates) == (done.lines, done.accepted, 1)
    assert said.reusable == done.reused
    for service in (BASE, AIGC):
        assert said.calls[service] == did[service]["called"], service
        assert said.reusable_by_service[service] == did[service]["reused"], service
        assert said.copies_by_service[service] == did[service]["waiting"], service
    expected = {BASE: 15 - 1 if rescan else 15 - 1 - 4, AIGC: 15 - 1 - 3}
    assert said.calls == expected  # 12 URLs + 3 files; the copy waits; then reuse, in flight
    # run again over the same inputs: every reference is a duplicate, nothing would be called
    again = estimate(
        Estimate("both", job.services), [list(read_inputs(inputs))], engine, job.id, scope
    )
    assert again.accepted == 0 and price(again, Prices(), 100).calls == {BASE: 0, AIGC: 0}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_two_service_dry_run_bills_nothing_and_the_run_bills_what_it_said(pipeline) -> None:
    n, k = 12, 5
    pipeline.start_worker()
    before = pipeline.imgmod("run", str(pipeline.urls(k)), "--job", "before", "--service", BASE)
    assert before.returncode == 0, before.stdout + before.stderr
    assert pipeline.settled_stats()["billed"] == k
    src = pipeline.urls(n)
    args = ("run", str(src), "--job", "both", "--service", BOTH, "--reuse-urls")

    dry = pipeline.imgmod(
        *args,
        "--dry-run",
        "--json",
        IMGMOD_PRICE_PER_1000=f"{BASE}=1,{AIGC}=0.6",
        IMGMOD_PRICE_CURRENCY="USD",
    )

    assert dry.returncode == 0, dry.stdout + dry.stderr
    said = json.loads(dry.stdout)
    assert said["calls"] == {BASE: n - k, AIGC: n} and said["billed_calls"] == 2 * n - k
    assert said["reusable_by_service"] == {BASE: k, AIGC: 0}
    assert said["estimated_cost_by_service"] == {BASE: "0.007", AIGC: "0.0072"}
    assert said["estimated_cost"] == "0.0142"
    assert pipeline.settled_stats()["billed"] == k  # the dry run billed nothing
    assert pipeline.scalar("SELECT count(*) FROM jobs WHERE name = 'both'") == 0

    run = pipeline.imgmod(*args)
    assert run.returncode == 0, run.stdout + run.stderr
    assert pipeline.settled_stats()["billed"] == k + said["billed_calls"]


@pytest.fixture
def doctor_env(sqlite_url: str, redis_url: str) -> Iterator[tuple[dict[str, str], Any]]:
    store.upgrade(sqlite_url)
    with running_emulator(qps=100) as emulator:
        yield (
            {
                "IMGMOD_DATABASE_URL": sqlite_url,
                "IMGMOD_BROKER_URL": redis_url,
                "IMGMOD_ENDPOINT": emulator.url,
                "IMGMOD_SERVICE": BOTH,
                "ALIBABA_CLOUD_ACCESS_KEY_ID": TEST_ACCESS_KEY_ID,
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET": TEST_ACCESS_KEY_SECRET,
            },
            emulator,
        )


def test_doctor_probes_each_configured_service_and_bills_nothing(doctor_env) -> None:
    env, emulator = doctor_env
    checks = run_checks(env)

    assert [c.name for c in checks][-2:] == [f"endpoint ({BASE})", f"endpoint ({AIGC})"]
    assert all(c.ok for c in checks), render(checks)
    assert f"service {BASE}, {AIGC}," in checks[0].detail
    assert emulator.stats()["by_code"] == {"400": 2}  # one imageless probe per service
    assert emulator.stats()["billed"] == 0
