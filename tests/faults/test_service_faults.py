"""Whole jobs against a misbehaving service: 403 storms, 405/500 answers, resets, slow answers,
malformed bodies, gateway 5xx, and retries running out.

Each test runs a real job (``imgmod run``, a Celery worker, a private Redis, SQLite) against the
emulator with one kind of fault switched on, then checks that every reference ended in the right
state, that each fault was retried under the code it is classified as (read from the worker's
"retry in" log lines), and what the emulator billed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from worker import store
from worker.emulator import TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET
from worker.emulator.testing import (
    EmulatorHandle,
    ImageServerHandle,
    running_emulator,
    running_image_server,
)
from worker.local import WorkerProcess, private_redis, start_worker, wait_until

pytestmark = pytest.mark.service

RETRY_LINE = re.compile(r"code=(.+?) attempts=(\d+) request_id=\S+ retry in")


@dataclass
class World:
    """One job's private world: SQLite file, private Redis, the emulator, workers."""

    env: dict[str, str]
    tmp: Path
    emulator: EmulatorHandle
    images: ImageServerHandle
    workers: list[WorkerProcess] = field(default_factory=list)

    def start_worker(self, concurrency: int = 16, **env: str) -> WorkerProcess:
        n = len(self.workers)
        worker = start_worker(
            {**self.env, **env}, self.tmp / f"worker{n}.log", concurrency, hostname=f"f{n}@%h"
        )
        self.workers.append(worker)
        return worker

    def imgmod(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "worker.cli", *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def urls(self, n: int, start: int = 0) -> Path:
        path = self.tmp / f"urls{start}-{n}.txt"
        path.write_text("\n".join(self.images.image_url(i) for i in range(start, start + n)) + "\n")
        return path

    def rows(self, sql: str) -> list[Any]:
        engine = store.make_engine(self.env["IMGMOD_DATABASE_URL"])
        try:
            with engine.connect() as conn:
                return list(conn.execute(sa.text(sql)))
        finally:
            engine.dispose()

    def states(self, job: str) -> dict[str, int]:
        out = json.loads(self.imgmod("status", job, "--json").stdout)["states"]
        return {k: v for k, v in out.items() if v}

    def retried_codes(self) -> Counter[str]:
        """Retry code of every "retry in" line the workers logged."""
        return Counter(m.group(1) for w in self.workers for m in RETRY_LINE.finditer(w.log()))

    def settled_stats(self) -> dict[str, Any]:
        """Emulator counters once no call is in flight (a slow answer may still be running)."""
        wait_until(lambda: self.emulator.stats()["in_flight"] == 0, 30, "calls in flight to end")
        return self.emulator.stats()


@pytest.fixture(scope="module")
def images() -> Iterator[ImageServerHandle]:
    with running_image_server() as server:
        yield server


@pytest.fixture
def world(images: ImageServerHandle, tmp_path: Path) -> Iterator[World]:
    with private_redis() as redis_server, running_emulator(qps=1000, seed=7) as emulator:
        env = {
            "IMGMOD_DATABASE_URL": f"sqlite:///{tmp_path / 'imgmod.db'}",
            "IMGMOD_BROKER_URL": redis_server.url,
            "IMGMOD_ENDPOINT": emulator.url,
            "IMGMOD_QPS": "100",
            "IMGMOD_BACKOFF_BASE": "0.1",
            "IMGMOD_BACKOFF_CAP": "0.5",
            "IMGMOD_MAX_ATTEMPTS": "12",
            "ALIBABA_CLOUD_ACCESS_KEY_ID": TEST_ACCESS_KEY_ID,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": TEST_ACCESS_KEY_SECRET,
        }
        w = World(env, tmp_path, emulator, images)
        upgrade = w.imgmod("db", "upgrade")
        assert upgrade.returncode == 0, upgrade.stderr
        try:
            yield w
        finally:
            for worker in w.workers:
                worker.terminate(timeout=30)


@pytest.mark.slow
def test_a_403_storm_converges_and_throttled_calls_stay_a_small_share(world: World) -> None:
    """The emulator caps the key at 10/s while workers believe 100/s: AIMD must find the cap."""
    n = 150
    world.emulator.configure(qps=10)
    world.start_worker(concurrency=16, IMGMOD_RETRY_PER_CODE="403=100")
    src = world.urls(n)
    run = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "run", str(src), "--job", "storm"],
        env={**os.environ, **world.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    engine = store.make_engine(world.env["IMGMOD_DATABASE_URL"])
    try:

        def done() -> int:
            job = store.get_job(engine, "storm")
            return 0 if job is None else store.state_counts(engine, job.id)["done"]

        wait_until(lambda: done() >= n // 2, 120, "half of the job to be done")
        half = world.emulator.stats()
        output, _ = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
        engine.dispose()
    end = world.settled_stats()

    def throttled(s: dict[str, Any]) -> int:
        return int(s["by_code"].get("403", 0))

    whole = throttled(end) / end["calls"]
    second = (throttled(end) - throttled(half)) / (end["calls"] - half["calls"])
    print(
        f"\n403 storm: {end['calls']} calls, {throttled(end)} throttled: {whole:.1%} of the job, "
        f"{second:.1%} of its second half ({end['calls'] - half['calls']} calls)"
    )
    assert run.returncode == 0, output
    assert world.states("storm") == {"done": n}
    assert end["billed"] == n and max(end["billed_by_image"].values()) == 1
    assert set(world.retried_codes()) == {"403"}
    # Converged: the second half wastes far fewer calls than it spends on images.
    # Finding the cap costs a burst of 403s at first (the rate halves at most once a second);
    # after that, a converged limiter wastes few calls.
    assert second < 0.15, f"{second:.1%} of the second half's calls were throttled"
    assert whole < 0.6, f"{whole:.1%} of the job's calls were throttled"


def test_405_and_500_answers_are_retried_until_every_reference_is_done(world: World) -> None:
    n = 80
    world.emulator.configure(fault_405=0.1, fault_500=0.1)
    world.start_worker()

    run = world.imgmod("run", str(world.urls(n)), "--job", "codes")

    assert run.returncode == 0, run.stdout + run.stderr
    assert world.states("codes") == {"done": n}
    stats = world.settled_stats()
    assert stats["by_code"].get("405", 0) > 0 and stats["by_code"].get("500", 0) > 0
    assert stats["billed"] == n and max(stats["billed_by_image"].values()) == 1
    assert set(world.retried_codes()) == {"405", "500"}
    attempts = world.rows("SELECT sum(attempts) FROM items")[0][0]
    assert attempts == n + sum(world.retried_codes().values())  # one claim per retry, no more


@pytest.mark.parametrize(
    ("knobs", "worker_env", "codes"),
    [
        pytest.param({"fault_reset": 0.2}, {}, {"connection"}, id="connection-resets"),
        pytest.param(
            {"fault_slow": 0.15, "slow_ms": 3000},
            {"IMGMOD_READ_TIMEOUT": "1"},
            {"timeout"},
            id="slower-than-read-timeout",
        ),
        pytest.param({"fault_malformed": 0.2}, {}, {"malformed"}, id="malformed-bodies"),
        pytest.param({"fault_gateway_5xx": 0.2}, {}, {"HTTP 502", "HTTP 503"}, id="gateway-5xx"),
    ],
)
def test_transport_and_gateway_faults_are_retried_as_classified_and_billed_once(
    world: World, knobs: dict[str, float], worker_env: dict[str, str], codes: set[str]
) -> None:
    n = 60
    world.emulator.configure(**knobs)
    world.start_worker(**worker_env)

    run = world.imgmod("run", str(world.urls(n)), "--job", "faults")

    assert run.returncode == 0, run.stdout + run.stderr
    assert world.states("faults") == {"done": n}
    retried = world.retried_codes()
    assert retried and set(retried) <= codes, retried
    stats = world.settled_stats()
    if "timeout" in codes:
        # The service answered (and billed) each call the client stopped waiting for; that is
        # the vendor's behaviour, not a double charge imgmod could avoid. Everything else once.
        assert stats["billed"] == n + retried["timeout"]
    else:
        assert stats["billed"] == n
        assert max(stats["billed_by_image"].values()) == 1
    assert len(stats["billed_by_image"]) == n


def test_exhausted_retries_end_failed_with_the_last_code_and_attempt_count(world: World) -> None:
    n = 5
    world.emulator.configure(fault_500=1.0)
    world.start_worker(IMGMOD_RETRY_PER_CODE="500=2")

    run = world.imgmod("run", str(world.urls(n)), "--job", "exhausted")

    assert run.returncode == 3, run.stdout + run.stderr
    assert world.states("exhausted") == {"failed": n}
    rows = world.rows("SELECT state, last_code, attempts, last_error FROM items")
    assert {(r.state, r.last_code, r.attempts) for r in rows} == {("failed", "500", 2)}
    assert all("retried later" in r.last_error or "500" in r.last_error for r in rows)
    assert world.settled_stats()["billed"] == 0
    report = json.loads(world.imgmod("report", "exhausted", "--json").stdout)
    assert report["failures_by_code"] == {"500": n}
    assert report["billable_calls"] == 0
