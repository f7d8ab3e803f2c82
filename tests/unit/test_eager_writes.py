"""A producer's eager write transactions on SQLite (worker.store.engine.write(eager=True)):
they wait for a held write lock by polling, get it once it is free, give up after the busy
timeout with SQLite's own error, and leave the connection's busy timeout as it was."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
import sqlalchemy as sa

from worker import store
from worker.processes import wait_until
from worker.store import engine as engine_module
from worker.store.engine import write


def _holder(url: str, taken: threading.Event, release: threading.Event) -> None:
    conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    taken.set()
    release.wait(30)
    conn.execute("COMMIT")
    conn.close()


class _CountingTime:
    """``time`` for the engine module, counting the eager writer's polls."""

    def __init__(self) -> None:
        self.sleeps = 0

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        time.sleep(seconds)

    def monotonic(self) -> float:
        return time.monotonic()


def test_an_eager_write_waits_for_the_lock_and_restores_the_busy_timeout(
    tmp_path, monkeypatch
) -> None:
    clock = _CountingTime()
    monkeypatch.setattr(engine_module, "time", clock)
    url = f"sqlite:///{tmp_path / 'eager.db'}"
    engine = store.make_engine(url)
    with write(engine) as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    taken, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_holder, args=(url, taken, release))
    holder.start()
    assert taken.wait(10)
    done = threading.Event()

    def eager() -> None:
        with write(engine, eager=True) as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        done.set()

    writer = threading.Thread(target=eager)
    writer.start()
    wait_until(lambda: clock.sleeps >= 3, 10, "the writer to be refused and retry")
    assert not done.is_set()  # the lock is still held
    release.set()
    wait_until(done.is_set, 30, "the eager write once the lock is free")
    writer.join(5)
    holder.join(5)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one() == 1
        timeout = conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one()
    assert timeout == engine_module.SQLITE_BUSY_TIMEOUT_MS
    engine.dispose()


def test_an_eager_write_gives_up_after_the_busy_timeout(tmp_path, monkeypatch) -> None:
    url = f"sqlite:///{tmp_path / 'eager.db'}"
    engine = store.make_engine(url)
    with write(engine) as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    taken, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_holder, args=(url, taken, release))
    holder.start()
    assert taken.wait(10)
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 200)
    try:
        with (
            pytest.raises(sa.exc.OperationalError, match="locked"),
            write(engine, eager=True) as conn,
        ):
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    finally:
        release.set()
        holder.join(5)
    engine.dispose()


def test_a_commands_engine_writes_eagerly_and_a_workers_does_not(tmp_path, monkeypatch) -> None:
    """``make_engine(eager_writes=True)`` (what commands open) polls on every write; a plain
    engine (a worker's) waits on SQLite's busy handler, never in the polling loop."""
    url = f"sqlite:///{tmp_path / 'eager.db'}"
    seen: list[bool] = []
    real = engine_module._begin_eagerly

    def spy(dbapi_conn) -> None:
        seen.append(True)
        real(dbapi_conn)

    monkeypatch.setattr(engine_module, "_begin_eagerly", spy)
    for eager in (False, True):
        engine = store.make_engine(url, eager_writes=eager)
        with write(engine) as conn:
            conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
        engine.dispose()
        assert seen == ([True] if eager else [])


def test_a_commands_connection_gets_a_large_page_cache_and_rare_checkpoints(tmp_path) -> None:
    """``imgmod enqueue``'s large batches need them (engine.COMMAND_PRAGMAS); a worker's
    pooled connections keep SQLite's defaults and their memory."""
    url = f"sqlite:///{tmp_path / 'pragmas.db'}"
    seen = {}
    for eager in (False, True):
        engine = store.make_engine(url, eager_writes=eager)
        with engine.connect() as conn:
            seen[eager] = tuple(
                conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("cache_size", "wal_autocheckpoint", "journal_size_limit")
            )
        engine.dispose()
    assert seen[True] == (-65536, 20000, 67108864)
    assert seen[False] == (-2000, 1000, -1)
