"""Fixtures for fault tests: each test owns its broker, so it may kill, restart or flush it.

A fault test gets a :class:`FaultStack`: a private ``redis-server`` (broker and rate limiter,
no persistence), its own emulator (slow, so many calls are in flight when something breaks),
the session's sample image server, a database (SQLite or PostgreSQL), and helpers to start
Celery workers, run ``imgmod`` in the foreground or the background, and read the job's rows.

Leases and the broker's visibility timeout are short (10 s) so recovery happens within a test;
everything else is the configuration a user runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from worker import store
from worker.emulator import TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET
from worker.emulator.testing import running_emulator, running_image_server
from worker.local import PrivateRedis, WorkerProcess, private_redis, start_worker, wait_until

LEASE_SECONDS = 10
VISIBILITY_TIMEOUT = 10


@pytest.fixture(scope="session")
def image_server() -> Iterator[Any]:
    with running_image_server() as server:
        yield server


@pytest.fixture
def broker() -> Iterator[PrivateRedis]:
    """A redis-server of this test's own: killing, restarting or flushing it harms nobody."""
    try:
        with private_redis() as server:
            yield server
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture
def emulator() -> Iterator[Any]:
    """Half a second per call: with a few dozen threads, dozens of calls are always in flight."""
    with running_emulator(qps=100, latency_ms=500) as emu:
        yield emu


class FaultStack:
    """One job's world, with the handles a fault test needs to break it."""

    lease_seconds = LEASE_SECONDS
    visibility_timeout = VISIBILITY_TIMEOUT

    def __init__(
        self, env: dict[str, str], tmp: Path, broker: PrivateRedis, emulator: Any, images: Any
    ) -> None:
        self.env = env
        self.tmp = tmp
        self.broker = broker
        self.emulator = emulator
        self.images = images
        self.workers: list[WorkerProcess] = []
        self.background: list[subprocess.Popen[str]] = []
        self.engine = store.make_engine(env["IMGMOD_DATABASE_URL"])

    # -- processes -------------------------------------------------------------------------

    def start_worker(self, concurrency: int = 32, **env: str) -> WorkerProcess:
        n = len(self.workers)
        proc = start_worker(
            {**self.env, **env},
            self.tmp / f"worker{n}.log",
            concurrency=concurrency,
            hostname=f"w{n}@%h",
        )
        self.workers.append(proc)
        return proc

    def imgmod(
        self, *args: str, timeout: float = 180, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "worker.cli", *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def imgmod_background(self, *args: str, **env: str) -> subprocess.Popen[str]:
        """``imgmod`` running while the test breaks things; ``communicate()`` to collect it."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", *args],
            env={**os.environ, **self.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.background.append(proc)
        return proc

    def write_urls(self, name: str, n: int) -> tuple[Path, list[str]]:
        urls = [self.images.image_url(i) for i in range(n)]
        path = self.tmp / name
        path.write_text("\n".join(urls) + "\n", encoding="utf-8")
        return path, urls

    def stop(self) -> None:
        for proc in self.background:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
        for w in self.workers:
            w.kill()
        self.engine.dispose()

    # -- reading the job -------------------------------------------------------------------

    def job_id(self, name: str) -> int:
        job = store.get_job(self.engine, name)
        assert job is not None, f"no job {name!r}"
        return job.id

    def counts(self, name: str) -> dict[str, int]:
        return store.state_counts(self.engine, self.job_id(name))

    def wait_for_job(self, name: str) -> None:
        """Wait until the job's rows exist (the producer is a separate process)."""
        wait_until(lambda: store.get_job(self.engine, name) is not None, 60, f"job {name}")

    def scalar(self, sql: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(sa.text(sql)).scalar()

    def rows(self, sql: str) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.text(sql)))

    def results_per_item_max(self) -> int:
        return int(
            self.scalar(
                "SELECT coalesce(max(n), 0) FROM "
                "(SELECT count(*) AS n FROM results GROUP BY item_id, service) AS t"
            )
        )

    def worker_logs(self) -> str:
        return "\n".join(f"--- worker {i}\n{w.log()[-4000:]}" for i, w in enumerate(self.workers))


def stack_env(database_url: str, broker: PrivateRedis, emulator: Any) -> dict[str, str]:
    return {
        "IMGMOD_DATABASE_URL": database_url,
        "IMGMOD_BROKER_URL": broker.url,
        "IMGMOD_ENDPOINT": emulator.url,
        "IMGMOD_QPS": "100",
        "IMGMOD_BACKOFF_BASE": "0.2",
        "IMGMOD_BACKOFF_CAP": "2",
        # Short call timeouts keep `imgmod run`'s stall floor (backoff cap plus one call) at 7 s.
        "IMGMOD_CONNECT_TIMEOUT": "1",
        "IMGMOD_READ_TIMEOUT": "3",
        "IMGMOD_LEASE_SECONDS": str(LEASE_SECONDS),
        "IMGMOD_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
        "ALIBABA_CLOUD_ACCESS_KEY_ID": TEST_ACCESS_KEY_ID,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": TEST_ACCESS_KEY_SECRET,
    }


def _stack(
    database_url: str, broker: PrivateRedis, emulator: Any, images: Any, tmp: Path
) -> Iterator[FaultStack]:
    env = stack_env(database_url, broker, emulator)
    subprocess.run(
        [sys.executable, "-m", "worker.cli", "db", "upgrade"],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        timeout=120,
    )
    stack = FaultStack(env, tmp, broker, emulator, images)
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def stack(
    sqlite_url: str, broker: PrivateRedis, emulator: Any, image_server: Any, tmp_path: Path
) -> Iterator[FaultStack]:
    """The fault stack on SQLite."""
    yield from _stack(sqlite_url, broker, emulator, image_server, tmp_path)


@pytest.fixture
def any_db_stack(
    database_url: str, broker: PrivateRedis, emulator: Any, image_server: Any, tmp_path: Path
) -> Iterator[FaultStack]:
    """The fault stack, once on SQLite and once on PostgreSQL."""
    yield from _stack(database_url, broker, emulator, image_server, tmp_path)
