"""A worker opens its first database connections when it is ready, before its first message
(``worker.store.open_connections``): its first claims must not each open one at the same moment."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from tests.support import Stack, wait_until
from worker import store
from worker.processes import free_port
from worker.runtime import READY_DATABASE_CONNECTIONS

OPEN_LINE = re.compile(r"database: (\d+) connections opened at start")


def _server_connections(engine: sa.Engine) -> int:
    """PostgreSQL's own count of the connections to this database, the asker's left out."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        )


def test_open_connections_leaves_them_standing_in_the_pool(database_url: str) -> None:
    store.upgrade(database_url)
    engine = store.make_engine(database_url, pool_size=5, max_overflow=5)
    try:
        assert engine.pool.checkedin() == 0
        assert store.open_connections(engine, 3) == 3
        assert engine.pool.checkedin() == 3
        assert engine.pool.checkedout() == 0
        if engine.dialect.name == "postgresql":
            watcher = store.make_engine(database_url)
            try:
                assert _server_connections(watcher) == 3
            finally:
                watcher.dispose()
    finally:
        engine.dispose()


def test_open_connections_opens_no_more_than_the_pool_keeps(database_url: str) -> None:
    store.upgrade(database_url)
    engine = store.make_engine(database_url, pool_size=2, max_overflow=10)
    try:
        assert store.open_connections(engine, 8) == 2
        assert engine.pool.checkedin() == 2
    finally:
        engine.dispose()


def test_open_connections_with_the_database_away_opens_none_and_raises_nothing() -> None:
    engine = store.make_engine(f"postgresql://imgmod@127.0.0.1:{free_port()}/imgmod")
    try:
        assert store.open_connections(engine, 4) == 0
    finally:
        engine.dispose()


@pytest.mark.service
def test_a_ready_worker_holds_its_connections_before_any_message(pipeline: Stack) -> None:
    worker = pipeline.start_worker(concurrency=16)
    line = wait_until(lambda: OPEN_LINE.search(worker.log()), 30, "the worker's opened connections")
    assert int(line.group(1)) == READY_DATABASE_CONNECTIONS
    if pipeline.engine.dialect.name == "postgresql":  # seen from the server's side too
        assert _server_connections(pipeline.engine) >= READY_DATABASE_CONNECTIONS
