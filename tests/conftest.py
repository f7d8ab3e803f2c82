"""Shared fixtures: real services on loopback, fresh state per test.

Under ``CI=true`` a test marked ``service`` may not be skipped: the skip becomes a failure,
so a missing Redis or PostgreSQL can never turn a red build green.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from worker.processes import ImageServerHandle, PrivateRedis, private_redis, running_image_server

REDIS_URL = os.environ.get("IMGMOD_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
PG_ADMIN_URL = os.environ.get("IMGMOD_TEST_PG_URL", "postgresql://root@127.0.0.1:5432/test")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if (
        os.environ.get("CI", "").lower() == "true"
        and report.skipped
        and item.get_closest_marker("service") is not None
    ):
        report.outcome = "failed"
        report.longrepr = f"service test skipped under CI: {report.longrepr}"


@pytest.fixture(scope="session")
def _redis_server() -> Iterator[str]:
    """A private redis-server for this test run, so that concurrent runs (and the machine's
    own Redis users) never see each other's queues and limiter keys; the machine's Redis
    (IMGMOD_TEST_REDIS_URL, db 15) when the binary is missing."""
    import shutil

    if shutil.which("redis-server") is None:
        yield REDIS_URL
        return
    with private_redis() as server:
        yield server.url.rsplit("/", 1)[0] + "/15"


@pytest.fixture
def redis_url(_redis_server: str) -> Iterator[str]:
    """A real Redis database, flushed before and after the test."""
    import redis

    client = redis.Redis.from_url(_redis_server)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.skip(f"Redis not reachable at {_redis_server}: {exc}")
    client.flushdb()
    yield _redis_server
    client.flushdb()
    client.close()


@pytest.fixture
def broker() -> Iterator[PrivateRedis]:
    """A redis-server of this test's own: killing, restarting or flushing it harms nobody."""
    try:
        with private_redis() as server:
            yield server
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def image_server() -> Iterator[ImageServerHandle]:
    """The sample image server, one for the whole run: it keeps no state between requests."""
    with running_image_server() as server:
        yield server


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'imgmod.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test, dropped afterwards."""
    import psycopg2

    name = f"imgmod_t_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg2.connect(PG_ADMIN_URL)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with admin.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
    admin.close()


@pytest.fixture
def browser() -> Iterator[object]:
    """Headless Chromium (a Selenium WebDriver) of this test's own: Debian's chromium through
    the system chromedriver, console log kept (tests.support.browser: console_errors,
    screenshot). Mark the test ``service``: under CI a missing browser fails it."""
    from tests.support import browser as chromium

    reason = chromium.missing()
    if reason is not None:
        pytest.skip(reason)
    with chromium.start_browser() as driver:
        yield driver


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request) -> str:
    """Runs the test once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")
