"""A database outage mid-job: PostgreSQL stops for 10 s while workers are calling the API.

Staged on a private cluster (see ``pg_cluster.py``) with a private Redis, so nothing another
test run uses is touched. The promise under test: workers wait and retry, an answer the API gave
during the outage is written afterwards (parked, not asked for again), so every reference ends
``done`` and the emulator billed each image exactly once; and ``imgmod run``, watching the job
all along, rides the outage out and exits 0.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from pg_cluster import ClusterUnavailable, PgCluster, private_pg_cluster
from sqlalchemy.exc import SQLAlchemyError

from tests.support import Stack, open_stack, running_emulator, stack_env, start_imgmod, wait_until
from worker import store
from worker.processes import ImageServerHandle, PrivateRedis

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
def stack(
    cluster: PgCluster, broker: PrivateRedis, image_server: ImageServerHandle, tmp_path: Path
) -> Iterator[Stack]:
    with running_emulator(qps=100, latency_ms=50) as emu:
        env = stack_env(
            cluster.create_database("imgmod"),
            broker.url,
            emu,
            IMGMOD_QPS="20",  # 200 images take ~10 s: the outage lands mid-job
            IMGMOD_BACKOFF_BASE="0.2",
            IMGMOD_BACKOFF_CAP="2",
        )
        with open_stack(env, tmp_path, emu, image_server, broker=broker) as opened:
            yield opened


def counts_or_none(engine: sa.Engine, job: str) -> dict[str, int] | None:
    """State counts of ``job``, or None while the database is away (or the job not yet made)."""
    try:
        found = store.get_job(engine, job)
        return None if found is None else store.state_counts(engine, found.id)
    except SQLAlchemyError:
        return None


def test_workers_and_imgmod_run_ride_out_a_10s_database_outage_billing_nothing_twice(
    stack: Stack, cluster: PgCluster, tmp_path: Path
) -> None:
    env, emulator = stack.env, stack.emulator
    src = tmp_path / "urls.txt"
    src.write_text("\n".join(stack.images.image_url(i) for i in range(IMAGES)) + "\n")
    stack.start_worker(concurrency=16)
    run_log = (tmp_path / "run.out").open("w+")
    run = start_imgmod(
        env, "run", str(src), "--job", "outage", stdout=run_log, stderr=subprocess.STDOUT
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
    log = stack.workers[0].log()
    assert "database unavailable" in log  # the workers did wait for it
    # `imgmod run` watched the whole job, outage included, and reports success.
    assert run.returncode == 0, run_output
    assert f"job outage: done {IMAGES}" in run_output
