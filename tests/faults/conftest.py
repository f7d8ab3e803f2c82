"""Fixtures for fault tests: each test owns its broker, so it may kill, restart or flush it.

A fault test gets a :class:`~tests.support.Stack`: a private ``redis-server`` (the ``broker``
fixture of ``tests/conftest.py``: broker and rate limiter, no persistence), its own emulator
(slow, so many calls are in flight when something breaks), the session's sample image server,
a database (SQLite or PostgreSQL), and helpers to start Celery workers, run ``imgmod`` in the
foreground or the background, and read the job's rows.

Leases and the broker's visibility timeout are short (10 s) so recovery happens within a test;
everything else is the configuration a user runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Emulator, Stack, open_stack, running_emulator, stack_env
from worker.processes import ImageServerHandle, PrivateRedis

LEASE_SECONDS = 10
VISIBILITY_TIMEOUT = 10


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """Half a second per call: with a few dozen threads, dozens of calls are always in flight."""
    with running_emulator(qps=100, latency_ms=500) as emu:
        yield emu


def _fault_stack(
    database_url: str,
    broker: PrivateRedis,
    emulator: Emulator,
    images: ImageServerHandle,
    tmp: Path,
) -> Iterator[Stack]:
    env = stack_env(
        database_url,
        broker.url,
        emulator,
        IMGMOD_BACKOFF_BASE="0.2",
        IMGMOD_BACKOFF_CAP="2",
        # Short call timeouts keep `imgmod run`'s stall floor (backoff cap plus one call) at 7 s.
        IMGMOD_CONNECT_TIMEOUT="1",
        IMGMOD_READ_TIMEOUT="3",
        IMGMOD_LEASE_SECONDS=str(LEASE_SECONDS),
        IMGMOD_VISIBILITY_TIMEOUT=str(VISIBILITY_TIMEOUT),
    )
    with open_stack(
        env, tmp, emulator, images, broker=broker, concurrency=32, kill_on_stop=True
    ) as stack:
        yield stack


@pytest.fixture
def stack(
    sqlite_url: str,
    broker: PrivateRedis,
    emulator: Emulator,
    image_server: ImageServerHandle,
    tmp_path: Path,
) -> Iterator[Stack]:
    """The fault stack on SQLite."""
    yield from _fault_stack(sqlite_url, broker, emulator, image_server, tmp_path)


@pytest.fixture
def any_db_stack(
    database_url: str,
    broker: PrivateRedis,
    emulator: Emulator,
    image_server: ImageServerHandle,
    tmp_path: Path,
) -> Iterator[Stack]:
    """The fault stack, once on SQLite and once on PostgreSQL."""
    yield from _fault_stack(database_url, broker, emulator, image_server, tmp_path)


@pytest.fixture
def world(broker: PrivateRedis, image_server: ImageServerHandle, tmp_path: Path) -> Iterator[Stack]:
    """A job against a misbehaving service: a fast emulator (1000/s, seeded faults) the test
    configures, SQLite, retries quick and many; workers of 16 threads, stopped gracefully."""
    with running_emulator(qps=1000, seed=7) as emulator:
        env = stack_env(
            f"sqlite:///{tmp_path / 'imgmod.db'}",
            broker.url,
            emulator,
            IMGMOD_BACKOFF_BASE="0.1",
            IMGMOD_BACKOFF_CAP="0.5",
            IMGMOD_MAX_ATTEMPTS="12",
        )
        with open_stack(env, tmp_path, emulator, image_server, broker=broker) as stack:
            yield stack
