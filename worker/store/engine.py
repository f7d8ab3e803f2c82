"""Engines and transactions: SQLite in WAL mode, PostgreSQL with a checked pool.

Every store function takes an :class:`~sqlalchemy.engine.Engine` from :func:`make_engine` and
runs one short transaction; writes go through :func:`write`, which on SQLite takes the write
lock with the transaction's first statement. :func:`is_outage` tells a database that is away
(wait) from one that refused a statement (don't repeat it).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import ConnectionPoolEntry

from worker.settings import normalize_database_url

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Sized for a Celery worker running many threads: most hold a connection only for one short
# transaction, so 20 standing connections plus bursts cover 128 threads without queueing long.
POOL_SIZE = 20
MAX_OVERFLOW = 40
POOL_TIMEOUT_S = 60

_SQLITE_OUTAGE_WORDS = ("locked", "busy", "unable to open", "disk i/o", "readonly")


def make_engine(
    url: str,
    *,
    pool_size: int = POOL_SIZE,
    max_overflow: int = MAX_OVERFLOW,
    eager_writes: bool = False,
) -> Engine:
    """An engine tuned for many threads: SQLite in WAL mode, PostgreSQL with a checked pool.

    ``pool_size`` standing connections, plus up to ``max_overflow`` opened in a burst; a caller
    that knows its thread count (a worker's concurrency) can size the pool to it.

    SQLite: WAL (readers never block the writer), ``busy_timeout`` 30 s, foreign keys on, and
    transactions begun by SQLAlchemy rather than the sqlite3 module, so a write transaction takes
    the write lock up front (``BEGIN IMMEDIATE``) and waits on ``busy_timeout`` instead of failing
    with "database is locked" halfway through. ``eager_writes`` (a command's single writer, never
    a worker's threads): every write transaction waits for the lock by polling
    (:func:`_begin_eagerly`).
    """
    parsed = sa.make_url(normalize_database_url(url))
    if parsed.drivername == "postgresql":
        # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; we ship psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg2")
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(
            parsed,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            poolclass=sa.pool.QueuePool,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=POOL_TIMEOUT_S,
        )
        _configure_sqlite(engine, eager_writes)
        return engine
    return sa.create_engine(
        parsed,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=POOL_TIMEOUT_S,
    )


def _configure_sqlite(engine: Engine, eager_writes: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN, see _on_begin
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _use_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")  # safe in WAL mode; fsync per checkpoint
        if eager_writes:
            for pragma in COMMAND_PRAGMAS:
                cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if options.get("imgmod_eager") or (eager_writes and options.get("imgmod_write")):
            _begin_eagerly(conn.connection.dbapi_connection)
            return
        mode = "IMMEDIATE" if options.get("imgmod_write") else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")


# A command's engine writes few, large transactions (``imgmod enqueue``: a batch of 10,000 rows
# with a random key each in the identity index). SQLite's default 2 MiB page cache spills such a
# batch's dirty index pages to the WAL before the commit, and its checkpoint every 1,000 WAL
# pages (4 MiB) copies and fsyncs the database after nearly every batch. A 64 MiB cache and a
# checkpoint every 20,000 pages (80 MiB, the WAL file trimmed back to 64 MiB after it) took a
# million rows from 15,500 to 22,600 rows/s (bench/RESULTS.md). Per connection: only a
# command's one or two connections pay the memory, never a worker's pool.
COMMAND_PRAGMAS = (
    "cache_size=-65536",  # KiB
    "wal_autocheckpoint=20000",  # pages
    "journal_size_limit=67108864",  # bytes
)

EAGER_POLL_S = 0.001  # an eager writer's retry step for the write lock


def _begin_eagerly(dbapi_conn: Any) -> None:
    """``BEGIN IMMEDIATE``, retried every millisecond instead of on SQLite's busy handler.

    Why: the handler sleeps in growing steps (up to 100 ms), so a producer's few large insert
    transactions lose the one write lock to a worker's many small ones (claims, results,
    renewals) and spend most of their time asleep while the lock is free (measured: two thirds
    of ``imgmod enqueue``'s wall time in those sleeps beside a busy worker, bench/RESULTS.md).
    Polling costs the one waiting thread microseconds per step; only the producer asks for it
    (its inserts, :func:`write` with ``eager=True``; every write of a command's engine,
    ``make_engine(eager_writes=True)``), never a worker's hundreds of threads. Gives
    up after the same 30 s as ``busy_timeout``, with SQLite's own "database is locked"."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    dbapi_conn.execute("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                dbapi_conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc).lower() or time.monotonic() > deadline:
                    # As SQLAlchemy wraps any statement's error: callers test for its class.
                    raise sa.exc.OperationalError("BEGIN IMMEDIATE", None, exc) from exc
            time.sleep(EAGER_POLL_S)
    finally:
        dbapi_conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")


def _use_wal(cursor: Any) -> None:
    """Switch the file to WAL once; the mode is persistent, later connections just read it.

    The switch needs an exclusive lock and SQLite does not wait on ``busy_timeout`` for it, so
    connections opening a brand-new file at the same moment retry here, up to the same timeout.
    """
    if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
        return
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def write(engine: Engine, *, eager: bool = False) -> Iterator[Connection]:
    """One write transaction (on SQLite: holding the write lock from its first statement;
    ``eager``: waiting for it by polling every millisecond, see :func:`_begin_eagerly`)."""
    with engine.connect() as conn:
        conn.execution_options(imgmod_write=True, imgmod_eager=eager)
        with conn.begin():
            yield conn


def open_connections(engine: Engine, count: int) -> int:
    """Open up to ``count`` of the engine's standing connections now, and leave them in its
    pool; returns how many stand there after (0 if the database is away: nothing raises).

    Why: a fresh worker's first messages all arrive within a few tens of milliseconds, and
    each claim then opened its own PostgreSQL connection at the same moment (a server process
    forked for each, on a box the worker shares): traced, the first claims waited 15-60 ms
    for a connection, 1-10 ms with eight opened when the worker was ready (bench/RESULTS.md,
    eleventh session). Never more than the pool keeps standing: a connection opened past it
    would be closed again on its return.
    """
    pool = engine.pool
    if not isinstance(pool, sa.pool.QueuePool):
        return 0  # no standing connections to open
    held: list[Connection] = []
    try:
        for _ in range(min(count, pool.size())):
            held.append(engine.connect())
    except sa.exc.SQLAlchemyError:
        pass  # away: the tasks meet it and say so, with the fix
    finally:
        for conn in held:
            conn.close()
    return pool.checkedin()


def safe_url(engine: Engine) -> str:
    """The engine's URL for messages: never its password."""
    return engine.url.render_as_string(hide_password=True)


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` says the database could not be reached or dropped the connection,
    which waiting can cure; False when it refused the statement itself (a data, integrity or
    programming error), which repeating cannot."""
    if isinstance(exc, DisconnectionError | PoolTimeout | InterfaceError):
        return True
    if isinstance(exc, OperationalError):
        if isinstance(exc.orig, sqlite3.OperationalError):  # sqlite3 files SQL errors here too
            return any(word in str(exc.orig).lower() for word in _SQLITE_OUTAGE_WORDS)
        return True
    return bool(getattr(exc, "connection_invalidated", False))
