"""A database outage mid-job: PostgreSQL stops for 10 s while workers are calling the API.

Staged on a private cluster (see ``pg_cluster.py``) with a private Redis, so nothing another
test run uses is touched. The promise under test: workers wait and retry, an answer the API gave
during the outage is written afterwards (parked, not asked for again), so every reference ends
``done`` and the emulator billed each image exactly once; and ``imgmod run``, watching the job
all along, rides the outage out and exits 0.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pg_cluster import ClusterUnavailable, PgCluster, private_pg_cluster
from sqlalchemy.exc import SQLAlchemyError

from worker import store
from worker.emulator import TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET
from worker.emulator.testing import running_emulator, running_image_server
from worker.local import PrivateRedis, WorkerProcess, private_redis, start_worker, wait_until
from worker.local import run_imgmod as imgmod

pytestmark = [pytest.mark.service, pytest.mark.slow]

IMAGES = 200
OUTAGE_SECONDS = 10.0


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    try:
        with private_pg_cluster() as pg:
            yield pg
    except ClusterUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def broker() -> Iterator[PrivateRedis]:
    with private_redis() as server:
        yield server


@pytest.fixture
def stack(cluster: PgCluster, broker: PrivateRedis, tmp_path: Path) -> Iterator[dict[str, Any]]:
    with running_image_server() as images, running_emulator(qps=100, latency_ms=50) as emu:
        env = {
            "IMGMOD_DATABASE_URL": cluster.create_database("imgmod"),
            "IMGMOD_BROKER_URL": broker.url,
            "IMGMOD_ENDPOINT": emu.url,
            "IMGMOD_QPS": "20",  # 200 images take ~10 s: the outage lands mid-job
            "IMGMOD_BACKOFF_BASE": "0.2",
            "IMGMOD_BACKOFF_CAP": "2",
            "ALIBABA_CLOUD_ACCESS_KEY_ID": TEST_ACCESS_KEY_ID,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": TEST_ACCESS_KEY_SECRET,
        }
        upgrade = imgmod(env, "db", "upgrade")
        assert upgrade.returncode == 0, upgrade.stderr
        workers: list[WorkerProcess] = []
        yield {"env": env, "images": images, "emulator": emu, "workers": workers}
        for worker in workers:
            worker.terminate(timeout=30)


def counts_or_none(engine: sa.Engine, job: str) -> dict[str, int] | None:
    """State counts of ``job``, or None while the database is away (or the job not yet made)."""
    try:
        found = store.get_job(engine, job)
        return None if found is None else store.state_counts(engine, found.id)
    except SQLAlchemyError:
        return None


def test_workers_and_imgmod_run_ride_out_a_10s_database_outage_billing_nothing_twice(
    stack: dict[str, Any], cluster: PgCluster, tmp_path: Path
) -> None:
    env, emulator = stack["env"], stack["emulator"]
    src = tmp_path / "urls.txt"
    src.write_text("\n".join(stack["images"].image_url(i) for i in range(IMAGES)) + "\n")
    stack["workers"].append(
        start_worker(env, tmp_path / "worker0.log", concurrency=16, hostname="w0@%h")
    )
    run_log = (tmp_path / "run.out").open("w+")
    run = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "run", str(src), "--job", "outage"],
        env={**os.environ, **env},
        stdout=run_log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    engine = store.make_engine(env["IMGMOD_DATABASE_URL"])
    try:

        def done() -> int:
            counts = counts_or_none(engine, "outage")
            return 0 if counts is None else counts["done"]

        wait_until(lambda: done() >= IMAGES // 5, 120, "a fifth of the job to be done")
        engine.dispose()
        cluster.stop()
        stopped_at_billed = emulator.stats()["billed"]
        time.sleep(OUTAGE_SECONDS)  # the outage itself: its length is what is under test
        billed_during_outage = emulator.stats()["billed"] - stopped_at_billed
        cluster.start()

        wait_until(lambda: done() == IMAGES, 180, "every reference to be done after the outage")
        final = counts_or_none(engine, "outage")
        run.wait(timeout=60)
        run_log.seek(0)
        run_output = run_log.read()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        run_log.close()
        engine.dispose()

    print(
        f"billed before the outage {stopped_at_billed}, during it {billed_during_outage}; "
        f"final {final}; emulator {emulator.stats()['billed']}"
    )
    assert final is not None and final["done"] == IMAGES, final
    stats = emulator.stats()
    assert stats["billed"] == IMAGES
    assert len(stats["billed_by_image"]) == IMAGES
    assert max(stats["billed_by_image"].values()) == 1
    log = stack["workers"][0].log()
    assert "database unavailable" in log  # the workers did wait for it
    # `imgmod run` watched the whole job, outage included, and reports success.
    assert run.returncode == 0, run_output
    assert f"job outage: done {IMAGES}" in run_output
