"""Fixtures for whole-pipeline tests: the emulator, sample images, real Celery workers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from worker.emulator import TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET
from worker.emulator.testing import running_emulator, running_image_server
from worker.local import WorkerProcess, start_worker


@pytest.fixture(scope="session")
def image_server() -> Iterator[Any]:
    with running_image_server() as server:
        yield server


@pytest.fixture
def emulator() -> Iterator[Any]:
    """A fresh emulator per test (its own counters), quick download timeout for 405 cases."""
    with running_emulator(qps=100, latency_ms=5, download_timeout=1.0) as emu:
        yield emu


class Pipeline:
    """One job's world: database, broker, emulator, and the workers started for it."""

    def __init__(self, env: dict[str, str], tmp: Path, emulator: Any, images: Any) -> None:
        self.env = env
        self.tmp = tmp
        self.emulator = emulator
        self.images = images
        self.workers: list[WorkerProcess] = []

    def start_worker(self, concurrency: int = 16, **env: str) -> WorkerProcess:
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
        self, *args: str, timeout: float = 180, check: bool = False, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "worker.cli", *args],
            env={**os.environ, **self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def write(self, name: str, lines: list[str]) -> Path:
        path = self.tmp / name
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def stop(self) -> None:
        for w in self.workers:
            w.terminate(timeout=30)


@pytest.fixture
def pipeline(
    database_url: str, redis_url: str, emulator: Any, image_server: Any, tmp_path: Path
) -> Iterator[Pipeline]:
    env = {
        "IMGMOD_DATABASE_URL": database_url,
        "IMGMOD_BROKER_URL": redis_url,
        "IMGMOD_ENDPOINT": emulator.url,
        "IMGMOD_QPS": "100",
        "IMGMOD_INFO_TYPE": "customImage,textInImage,publicFigure,logoData",
        "IMGMOD_RETRY_PER_CODE": "405=2",
        "IMGMOD_BACKOFF_BASE": "0.1",
        "IMGMOD_BACKOFF_CAP": "1",
        "IMGMOD_READ_TIMEOUT": "5",
        "ALIBABA_CLOUD_ACCESS_KEY_ID": TEST_ACCESS_KEY_ID,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": TEST_ACCESS_KEY_SECRET,
    }
    p = Pipeline(env, tmp_path, emulator, image_server)
    p.imgmod("db", "upgrade", check=True)
    try:
        yield p
    finally:
        p.stop()
