"""Fixtures for whole-pipeline tests: the emulator and a :class:`~tests.support.Stack` with
real Celery workers (the sample image server is the session's, from ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from tests.support import Emulator, Stack, open_stack, running_emulator, stack_env
from worker import store
from worker.app import make_app
from worker.processes import ImageServerHandle, private_redis
from worker.settings import load_settings


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """A fresh emulator per test (its own counters), quick download timeout for 405 cases."""
    with running_emulator(qps=100, latency_ms=5, download_timeout=1.0) as emu:
        yield emu


@pytest.fixture
def pipeline(
    database_url: str,
    redis_url: str,
    emulator: Emulator,
    image_server: ImageServerHandle,
    tmp_path: Path,
) -> Iterator[Stack]:
    """One job's world on the shared Redis: workers of 16 threads, stopped gracefully."""
    env = stack_env(
        database_url,
        redis_url,
        emulator,
        IMGMOD_INFO_TYPE="customImage,textInImage,publicFigure,logoData",
        IMGMOD_RETRY_PER_CODE="405=2",
        IMGMOD_BACKOFF_BASE="0.1",
        IMGMOD_BACKOFF_CAP="1",
        IMGMOD_READ_TIMEOUT="5",
    )
    with open_stack(env, tmp_path, emulator, image_server) as stack:
        yield stack


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    """A migrated database of ``database_url``'s kind (SQLite, then PostgreSQL) and its engine;
    a test file that needs another one defines its own ``engine``."""
    store.upgrade(database_url)
    engine = store.make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def world(database_url: str) -> Iterator[tuple[sa.Engine, Any, redis.Redis]]:
    """A migrated database, a Celery app on a private Redis, and a client of that Redis (the
    window's refills and the look for lost messages, without a worker)."""
    with private_redis() as server:
        store.upgrade(database_url)
        engine = store.make_engine(database_url)
        app = make_app(
            load_settings({"IMGMOD_BROKER_URL": server.url, "IMGMOD_DATABASE_URL": database_url})
        )
        client = redis.Redis.from_url(server.url)
        try:
            yield engine, app, client
        finally:
            client.close()
            engine.dispose()
