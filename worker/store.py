"""The SQL store: tables, schema migrations and the short transactions every other part runs.

Works on SQLite (the embedded default) and PostgreSQL. Every public function takes an
:class:`~sqlalchemy.engine.Engine`, runs one short transaction and is safe to call from many
threads and processes at once. Correctness under concurrency rests on single atomic statements,
not on locks held in Python:

* :func:`claim_item` is one ``UPDATE ... WHERE <claimable> RETURNING``: of two workers handed
  the same (redelivered) message, exactly one gets the row.
* :func:`record_result` inserts into ``results`` with ``ON CONFLICT (item_id, service) DO
  NOTHING``: however many workers finish the same image, one results row is stored.

Times are timezone-aware UTC in Python; SQLite stores them as naive UTC text, PostgreSQL as
``timestamptz``. Lease times (granting, renewing, expiring, comparing) are taken from the
**database's** clock, inside the statement that uses them, so a worker host whose clock is off
can neither take a live lease nor lose its own early; other timestamps (``updated_at``,
``moderated_at``...) are informative and come from the calling process.

The schema is created and evolved by the Alembic migrations in the top-level ``migrations/``
directory (``imgmod db upgrade``); the tables below describe the current head and must be kept
in step with the newest migration.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import ConnectionPoolEntry

from worker.settings import normalize_database_url

STATES = ("pending", "queued", "running", "done", "failed", "rejected")
OPEN_STATES = ("pending", "queued", "running")
KINDS = ("url", "oss", "invalid")

RAW_INPUT_LIMIT = 2000  # characters of a rejected line kept for the report
ID_BATCH = 1000  # ids per statement / per yielded batch
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Sized for a Celery worker running many threads: most hold a connection only for one short
# transaction, so 20 standing connections plus bursts cover 128 threads without queueing long.
POOL_SIZE = 20
MAX_OVERFLOW = 40
POOL_TIMEOUT_S = 60


def find_migrations(package_dir: Path) -> Path:
    """Where the Alembic migrations of the ``worker`` package at ``package_dir`` are.

    They live at the repository's top level (``migrations/``), beside the package: that is where
    a source checkout or an editable install finds them. A wheel cannot put files beside the
    package, so pyproject.toml maps the same directory into it as ``worker/_migrations``; that
    location is tried first. When neither exists, the wheel's location is named in the error.
    """
    candidates = (package_dir / "_migrations", package_dir.parent / "migrations")
    for candidate in candidates:
        if (candidate / "env.py").is_file():
            return candidate
    return candidates[0]


MIGRATIONS_DIR = find_migrations(Path(__file__).resolve().parent)
_MIGRATION_LOCK_KEY = 0x696D676D6F64  # "imgmod": pg_advisory_xact_lock key for upgrades


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite has no time zones)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use datetime.now(timezone.utc)")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


# SQLite only autoincrements an "INTEGER PRIMARY KEY"; elsewhere ids are 64-bit.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# JSONB on PostgreSQL (compact, indexable later), JSON text elsewhere.
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("service", sa.String(64), nullable=False),
    sa.Column("info_type", sa.String(200), nullable=False, server_default=""),
    sa.Column("referer", sa.String(256)),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime()),
    sa.Column("total_lines", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("accepted", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("duplicates", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("rejected", sa.BigInteger(), nullable=False, server_default="0"),
)

items = sa.Table(
    "items",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.BigInteger(), sa.ForeignKey("jobs.id"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("ref_key", sa.Text(), nullable=False),
    sa.Column("image_url", sa.Text()),
    sa.Column("oss_bucket", sa.String(64)),
    sa.Column("oss_object", sa.Text()),
    sa.Column("oss_region", sa.String(64)),
    sa.Column("data_id", sa.String(64)),
    sa.Column("referer", sa.String(256)),
    sa.Column("source", sa.Text(), nullable=False),
    sa.Column("line", sa.BigInteger(), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("last_code", sa.String(64)),
    sa.Column("last_message", sa.Text()),
    sa.Column("last_error", sa.Text()),
    sa.Column("raw_input", sa.Text()),
    sa.Column("lease_owner", sa.String(200)),
    sa.Column("lease_expires_at", UTCDateTime()),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("queued_at", UTCDateTime()),
    sa.Column("finished_at", UTCDateTime()),
    sa.UniqueConstraint("job_id", "ref_key"),
    sa.Index(None, "job_id", "state"),
    sa.Index(None, "state", "lease_expires_at"),
    sa.Index(None, "job_id", "id"),  # keyset pagination of one job (exports, resume)
)

results = sa.Table(
    "results",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("item_id", sa.BigInteger(), sa.ForeignKey("items.id"), nullable=False),
    sa.Column("job_id", sa.BigInteger(), sa.ForeignKey("jobs.id"), nullable=False),
    sa.Column("service", sa.String(64), nullable=False),
    sa.Column("request_id", sa.String(128)),
    sa.Column("code", sa.String(64)),
    sa.Column("msg", sa.Text()),
    sa.Column("data_id", sa.String(64)),
    sa.Column("risk_level", sa.String(16)),
    sa.Column("ext", Json),
    sa.Column("raw", Json, nullable=False),
    sa.Column("moderated_at", UTCDateTime(), nullable=False),
    # One stored answer per image and service, whoever finishes first.
    sa.UniqueConstraint("item_id", "service"),
    sa.Index(None, "job_id", "risk_level"),
)

result_labels = sa.Table(
    "result_labels",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("result_id", sa.BigInteger(), sa.ForeignKey("results.id"), nullable=False),
    sa.Column("job_id", sa.BigInteger(), nullable=False),
    sa.Column("item_id", sa.BigInteger(), nullable=False),
    sa.Column("label", sa.String(128), nullable=False),
    sa.Column("confidence", sa.Float()),
    sa.Column("description", sa.Text()),
    sa.Column("risk_level", sa.String(16)),
    sa.Index(None, "result_id"),
    # "every image with label L at confidence >= C", across jobs or within one.
    sa.Index(None, "label", "confidence"),
    sa.Index(None, "job_id", "label", "confidence"),
)


# --------------------------------------------------------------------------- engines


def make_engine(url: str) -> Engine:
    """An engine tuned for many threads: SQLite in WAL mode, PostgreSQL with a checked pool.

    SQLite: WAL (readers never block the writer), ``busy_timeout`` 30 s, foreign keys on, and
    transactions begun by SQLAlchemy rather than the sqlite3 module, so a write transaction takes
    the write lock up front (``BEGIN IMMEDIATE``) and waits on ``busy_timeout`` instead of failing
    with "database is locked" halfway through.
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
            pool_size=POOL_SIZE,
            max_overflow=MAX_OVERFLOW,
            pool_timeout=POOL_TIMEOUT_S,
        )
        _configure_sqlite(engine)
        return engine
    return sa.create_engine(
        parsed,
        pool_pre_ping=True,
        pool_size=POOL_SIZE,
        max_overflow=MAX_OVERFLOW,
        pool_timeout=POOL_TIMEOUT_S,
    )


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN, see _on_begin
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _use_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")  # safe in WAL mode; fsync per checkpoint
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = "IMMEDIATE" if conn.get_execution_options().get("imgmod_write") else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")


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
def _write(engine: Engine) -> Iterator[Connection]:
    """One write transaction (on SQLite: holding the write lock from its first statement)."""
    with engine.connect() as conn:
        conn.execution_options(imgmod_write=True)
        with conn.begin():
            yield conn


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _db_now(dialect: Dialect, plus_seconds: float = 0.0) -> sa.ColumnElement[datetime]:
    """The database server's "now" (plus ``plus_seconds``), as SQL evaluated by the statement.

    Leases are granted by one host and judged by another; only the database's clock is the
    same for both. SQLite: ``strftime`` in the stored text format (naive UTC, microseconds).
    PostgreSQL: ``clock_timestamp()``, the real time, not the transaction's start.
    """
    if dialect.name == "sqlite":
        text = sa.func.strftime(
            "%Y-%m-%d %H:%M:%f", "now", sa.literal(f"{plus_seconds:+.6f} seconds")
        ).op("||")(sa.literal("000"))
        return sa.type_coerce(text, UTCDateTime())
    now: sa.ColumnElement[Any] = sa.func.clock_timestamp()
    if plus_seconds:
        now = now + sa.literal(timedelta(seconds=plus_seconds), sa.Interval())
    return sa.type_coerce(now, UTCDateTime())


def _safe_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _clip(table: sa.Table, values: dict[str, Any]) -> dict[str, Any]:
    """Cut strings to their column's length: PostgreSQL refuses an over-long ``varchar``, and
    an odd value the service sent back (a long code, a request id) must never cost a billed
    answer its row. SQLite ignores lengths; this keeps both databases holding the same data."""
    for name, value in values.items():
        if isinstance(value, str):
            length = getattr(table.c[name].type, "length", None)
            if length is not None and len(value) > length:
                values[name] = value[:length]
    return values


# --------------------------------------------------------------------------- schema


class SchemaError(RuntimeError):
    """The database's schema is missing, older or newer than this imgmod expects."""


def _alembic_config(connection: Connection | None = None) -> Any:
    from alembic.config import Config

    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise SchemaError(
            f"the migrations directory {MIGRATIONS_DIR} is missing, so this imgmod install is "
            "incomplete; reinstall it (pip install --force-reinstall imgmod) from a wheel or "
            "the source tree"
        )
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str | None:
    """The newest migration this imgmod ships."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {rev.revision for rev in ScriptDirectory.from_config(_alembic_config()).walk_revisions()}


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None when imgmod never migrated it."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision``; safe when several processes race.

    The whole upgrade runs in one transaction (both backends have transactional DDL), behind the
    write lock on SQLite and an advisory lock on PostgreSQL, so a second process waits and then
    finds nothing left to do.
    """
    from alembic import command

    engine = make_engine(url)
    try:
        with _write(engine) as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY}
                )
            command.upgrade(_alembic_config(conn), revision)
    finally:
        engine.dispose()


def check_schema(engine: Engine) -> None:
    """Raise :class:`SchemaError` unless the database is exactly at this imgmod's head."""
    current, head = current_revision(engine), head_revision()
    if current == head:
        return
    where = _safe_url(engine)
    if current is None:
        raise SchemaError(f"the database {where} has no imgmod tables; run `imgmod db upgrade`")
    if current not in _known_revisions():
        raise SchemaError(
            f"the database {where} is at schema revision {current}, which this imgmod does not "
            f"know (its newest is {head}): a newer imgmod wrote it; upgrade imgmod"
        )
    raise SchemaError(
        f"the database {where} is at schema revision {current}, behind {head}; "
        "run `imgmod db upgrade`"
    )


def ensure_schema(url: str) -> Engine:
    """An engine whose schema is current: SQLite is migrated on first use, others only checked.

    A shared PostgreSQL database is upgraded deliberately (``imgmod db upgrade``), never as a
    side effect of starting a worker; an embedded SQLite file belongs to this installation.
    """
    engine = make_engine(url)
    if engine.dialect.name == "sqlite":
        current = current_revision(engine)
        if current is None or (current != head_revision() and current in _known_revisions()):
            upgrade(url)
    check_schema(engine)
    return engine


# --------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class Job:
    id: int
    name: str
    service: str
    info_type: str
    referer: str | None
    created_at: datetime
    finished_at: datetime | None
    total_lines: int
    accepted: int
    duplicates: int
    rejected: int


def _job(row: sa.Row[Any]) -> Job:
    return Job(**{name: row._mapping[name] for name in Job.__dataclass_fields__})


def _insert_for(conn: Connection, table: sa.Table) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT DO NOTHING."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table)
    raise SchemaError(f"unsupported database {conn.dialect.name}; use SQLite or PostgreSQL")


def get_or_create_job(
    engine: Engine, name: str, service: str, info_type: str, referer: str | None = None
) -> Job:
    """The job called ``name``, created if new. Reusing a name with another service or infoType
    is refused: its items would otherwise be moderated under two configurations. ``referer`` is
    the job's default when it is created; an existing job keeps its own."""
    if not name or len(name) > 200:
        raise ValueError(f"a job name has 1 to 200 characters, not {len(name)}")
    with _write(engine) as conn:
        stmt = _insert_for(conn, jobs).values(
            name=name, service=service, info_type=info_type, referer=referer, created_at=_now()
        )
        conn.execute(stmt.on_conflict_do_nothing(index_elements=["name"]))
        job = _job(conn.execute(sa.select(jobs).where(jobs.c.name == name)).one())
    differences = [
        f"{what} is {old!r}, not {new!r}"
        for what, old, new in (
            ("service", job.service, service),
            ("info_type", job.info_type, info_type),
        )
        if old != new
    ]
    if differences:
        raise ValueError(
            f"job {name!r} already exists and its {'; its '.join(differences)}; "
            "use another job name or the job's own settings"
        )
    return job


def get_job(engine: Engine, name: str) -> Job | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(jobs).where(jobs.c.name == name)).one_or_none()
    return None if row is None else _job(row)


def list_jobs(engine: Engine) -> list[Job]:
    with engine.connect() as conn:
        return [_job(row) for row in conn.execute(sa.select(jobs).order_by(jobs.c.id))]


def add_counts(
    engine: Engine,
    job_id: int,
    total_lines: int = 0,
    accepted: int = 0,
    duplicates: int = 0,
    rejected: int = 0,
) -> None:
    """Add to the producer counters (increments, so concurrent producers do not lose counts)."""
    with _write(engine) as conn:
        conn.execute(
            sa.update(jobs)
            .where(jobs.c.id == job_id)
            .values(
                total_lines=jobs.c.total_lines + total_lines,
                accepted=jobs.c.accepted + accepted,
                duplicates=jobs.c.duplicates + duplicates,
                rejected=jobs.c.rejected + rejected,
            )
        )


def finish_job_if_complete(engine: Engine, job_id: int) -> bool:
    """Stamp ``finished_at`` once no item is pending, queued or running; True when finished."""
    open_items = sa.exists().where(items.c.job_id == job_id, items.c.state.in_(OPEN_STATES))
    with _write(engine) as conn:
        conn.execute(
            sa.update(jobs)
            .where(jobs.c.id == job_id, jobs.c.finished_at.is_(None), ~open_items)
            .values(finished_at=_now())
        )
        finished = conn.execute(
            sa.select(jobs.c.finished_at).where(jobs.c.id == job_id)
        ).scalar_one_or_none()
    return finished is not None


# --------------------------------------------------------------------------- items


@dataclass(frozen=True)
class NewItem:
    """One input line for :func:`insert_items`: a reference (``pending``) or a ``rejected`` line."""

    kind: str
    ref_key: str
    image_url: str | None
    oss_bucket: str | None
    oss_object: str | None
    oss_region: str | None
    data_id: str | None
    referer: str | None
    source: str
    line: int
    state: str
    last_error: str | None = None
    raw_input: str | None = None


def rejected_ref_key(source: str, line: int, identity: str = "") -> str:
    """The dedup key of a rejected line in its job.

    ``identity`` (the reader's :attr:`worker.sources.Rejected.identity`) tells inputs apart
    beyond their display name: enqueuing the same unchanged file twice adds nothing, while two
    ``urls.txt`` from different folders, or two runs of ``-``, keep a row per rejected line.
    Without it, the display ``source`` and ``line`` stand in (rows built by hand, in tests).
    """
    return f"rejected:{identity}" if identity else f"rejected:{source}:{line}"


def insert_items(engine: Engine, job_id: int, rows: Sequence[NewItem]) -> list[int]:
    """Insert ``rows``; those already in the job (same ``ref_key``) are skipped.

    Returns the ids of the rows actually inserted, in no particular order. One multi-row
    statement per batch (SQLAlchemy's "insertmanyvalues"), one transaction for the call.
    """
    if not rows:
        return []
    for row in rows:
        if row.state not in ("pending", "rejected"):
            raise ValueError(f"new items are 'pending' or 'rejected', not {row.state!r}")
    now = _now()
    params = []
    for row in rows:
        # vars(), not asdict(): asdict deep-copies every field, a third of the producer's time
        values = dict(vars(row), job_id=job_id, attempts=0, created_at=now, updated_at=now)
        if row.raw_input is not None:
            values["raw_input"] = row.raw_input[:RAW_INPUT_LIMIT]
        values["finished_at"] = now if row.state == "rejected" else None
        params.append(values)
    with _write(engine) as conn:
        stmt = (
            _insert_for(conn, items)
            .on_conflict_do_nothing(index_elements=["job_id", "ref_key"])
            .returning(items.c.id)
        )
        return [int(r) for r in conn.execute(stmt, params).scalars()]


def _chunks(ids: Sequence[int], size: int = ID_BATCH) -> Iterator[list[int]]:
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])


def mark_queued(engine: Engine, ids: Sequence[int]) -> None:
    """``pending`` -> ``queued`` for the rows whose message is now on the broker.

    Rows a fast worker already claimed (or finished) are left alone.
    """
    if not ids:
        return
    now = _now()
    with _write(engine) as conn:
        for chunk in _chunks(ids):
            conn.execute(
                sa.update(items)
                .where(items.c.id.in_(chunk), items.c.state == "pending")
                .values(state="queued", queued_at=now, updated_at=now)
            )


# ---- the publishing window (worker.window): pending rows wait here until the broker has room


def jobs_with_pending(engine: Engine) -> list[int]:
    """Ids of the jobs that have ``pending`` rows, oldest job first (one index probe per job)."""
    waiting = sa.exists().where(items.c.job_id == jobs.c.id, items.c.state == "pending")
    with engine.connect() as conn:
        rows = conn.execute(sa.select(jobs.c.id).where(waiting).order_by(jobs.c.id)).scalars()
        return [int(i) for i in rows]


def take_pending(engine: Engine, job_id: int, limit: int) -> list[int]:
    """Up to ``limit`` of the job's ``pending`` rows, now ``queued``: their ids, ascending.

    One atomic ``UPDATE ... WHERE id IN (SELECT ... LIMIT n) AND state = 'pending' RETURNING``,
    so two refillers never take the same row: SQLite runs it under the write lock, PostgreSQL
    locks the chosen rows ``FOR UPDATE SKIP LOCKED`` (a concurrent taker passes over them, and
    a row taken meanwhile fails the outer ``state = 'pending'``). SQLite takes the oldest rows
    (the ``(job_id, state)`` index is in id order); PostgreSQL takes them in table order, which
    is insertion order up to reused space: an ``ORDER BY id`` there makes the planner walk the
    primary key past every finished row (~170 ms at a million rows, against ~10 ms).
    """
    if limit <= 0:
        return []
    now = _now()
    chosen = items.alias("chosen")
    with _write(engine) as conn:
        pick = sa.select(chosen.c.id).where(chosen.c.job_id == job_id, chosen.c.state == "pending")
        taken: list[sa.ColumnElement[bool]] = [
            items.c.id.in_(pick.order_by(chosen.c.id).limit(limit).scalar_subquery())
        ]
        if conn.dialect.name == "postgresql":
            # A CTE, evaluated once: as an IN (subquery) PostgreSQL may run the LIMIT again
            # per row it updates, and take far more than ``limit`` rows (measured: all).
            picked = pick.limit(limit).with_for_update(skip_locked=True).cte("picked")
            taken = [items.c.id == picked.c.id, items.c.state == "pending"]
        # (SQLite: no outer state test, the write lock already makes the statement atomic, and
        # with one its planner scans the state index, every pending row, instead of the ids.)
        ids = conn.execute(
            sa.update(items)
            .where(*taken)
            .values(state="queued", queued_at=now, updated_at=now)
            .returning(items.c.id)
        ).scalars()
        return sorted(int(i) for i in ids)


def return_to_pending(engine: Engine, ids: Sequence[int]) -> None:
    """``queued`` -> ``pending`` for rows taken whose messages may not have reached the broker
    (a failed publish): the window publishes them again later. Claimed rows are left alone."""
    if not ids:
        return
    now = _now()
    with _write(engine) as conn:
        for chunk in _chunks(ids):
            conn.execute(
                sa.update(items)
                .where(items.c.id.in_(chunk), items.c.state == "queued")
                .values(state="pending", updated_at=now)
            )


def reopen_open_items(engine: Engine, job_id: int, *, include_queued: bool = True) -> int:
    """Put the job's ``queued`` rows (optionally) and ``running`` rows with an expired lease
    back to ``pending``, for the window to publish again; returns the job's ``pending`` rows.

    For a broker that lost its messages (``imgmod resume``, stall detection). A reopened row
    whose message did survive is claimed by it as usual (``pending`` is claimable); the copy
    published later finds it taken and costs one no-op claim.
    """
    reopen = sa.and_(items.c.state == "running", items.c.lease_expires_at < _db_now(engine.dialect))
    if include_queued:
        reopen = sa.or_(items.c.state == "queued", reopen)
    with _write(engine) as conn:
        conn.execute(
            sa.update(items)
            .where(items.c.job_id == job_id, reopen)
            .values(state="pending", lease_owner=None, lease_expires_at=None, updated_at=_now())
        )
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(
                    items.c.job_id == job_id, items.c.state == "pending"
                )
            ).scalar_one()
        )


@dataclass(frozen=True)
class ClaimedItem:
    """An item leased to one worker, with its job's request settings.

    ``job_key`` names the job across databases (its id, name and creation time, hashed): two
    databases can both have a job 1 and an item 7, never the same job key.
    """

    id: int
    job_id: int
    kind: str
    image_url: str | None
    oss_bucket: str | None
    oss_object: str | None
    oss_region: str | None
    data_id: str | None
    referer: str | None
    attempts: int
    service: str
    info_type: str
    job_key: str = ""


def _lease_over(now: sa.ColumnElement[datetime]) -> sa.ColumnElement[bool]:
    return sa.or_(items.c.lease_expires_at.is_(None), items.c.lease_expires_at < now)


def _claimable(now: sa.ColumnElement[datetime]) -> sa.ColumnElement[bool]:
    return sa.or_(
        items.c.state.in_(("pending", "queued")),
        sa.and_(items.c.state == "running", _lease_over(now)),
    )


# The columns a claim returns: built once, not per claim (this is the hot path).
_CLAIMED_COLS = tuple(c for c in items.c if c.name in ClaimedItem.__dataclass_fields__)


def claim_item(
    engine: Engine, item_id: int, owner: str, lease_seconds: float
) -> ClaimedItem | None:
    """Lease the item to ``owner``, or None when it is finished, rejected or leased elsewhere.

    The claim is one atomic ``UPDATE ... WHERE <claimable> RETURNING``: when a message is
    delivered twice, exactly one worker gets the row; the other sees None and acks.
    An expired lease (a worker that died, or stopped renewing) may be taken over. The lease
    runs ``lease_seconds`` on the database's clock; the owner keeps it alive with
    :func:`renew_leases`. ``attempts`` counts claims.
    """
    now = _now()
    with _write(engine) as conn:
        row = conn.execute(
            sa.update(items)
            .where(items.c.id == item_id, _claimable(_db_now(conn.dialect)))
            .values(
                state="running",
                lease_owner=owner,
                lease_expires_at=_db_now(conn.dialect, lease_seconds),
                attempts=items.c.attempts + 1,
                updated_at=now,
            )
            .returning(*_CLAIMED_COLS)
        ).one_or_none()
        if row is None:
            return None
        service, info_type, job_key = _job_settings(conn, row.job_id)
    return ClaimedItem(**row._mapping, service=service, info_type=info_type, job_key=job_key)


# (database URL, job id) -> (service, infoType, job key). A job's service and infoType never
# change (get_or_create_job refuses), so a worker reads them once per job, not once per claim.
_JOB_SETTINGS: dict[tuple[str, int], tuple[str, str, str]] = {}


def job_key(job_id: int, name: str, created_at: datetime) -> str:
    """A job's identity across databases: a recreated database, or another deployment, has a
    job with the same id but another name or creation time (to the microsecond)."""
    text = f"{job_id}\0{name}\0{created_at.astimezone(timezone.utc).isoformat()}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _job_settings(conn: Connection, job_id: int) -> tuple[str, str, str]:
    key = (str(conn.engine.url), job_id)
    found = _JOB_SETTINGS.get(key)
    if found is None:
        job = conn.execute(
            sa.select(jobs.c.service, jobs.c.info_type, jobs.c.name, jobs.c.created_at).where(
                jobs.c.id == job_id
            )
        ).one()
        found = (job.service, job.info_type, job_key(job_id, job.name, job.created_at))
        _JOB_SETTINGS[key] = found
    return found


def extend_lease(engine: Engine, item_id: int, owner: str, lease_seconds: float) -> bool:
    """Push the lease out; False when ``owner`` no longer holds the item (stop working on it)."""
    with _write(engine) as conn:
        result = conn.execute(
            sa.update(items)
            .where(items.c.id == item_id, items.c.state == "running", items.c.lease_owner == owner)
            .values(lease_expires_at=_db_now(conn.dialect, lease_seconds), updated_at=_now())
        )
    return result.rowcount == 1


def renew_leases(engine: Engine, held: Mapping[int, str], lease_seconds: float) -> set[int]:
    """Push out the leases of every row in ``held`` (id -> owner) still leased to its owner,
    in one statement per thousand rows; returns the ids renewed. A held id missing from the
    answer was taken over (its lease ran out first) or closed: its holder should not call."""
    renewed: set[int] = set()
    if not held:
        return renewed
    ids = sorted(held)
    with _write(engine) as conn:
        for chunk in _chunks(ids):
            owners = {held[i] for i in chunk}
            rows = conn.execute(
                sa.update(items)
                .where(
                    items.c.id.in_(chunk),
                    items.c.state == "running",
                    items.c.lease_owner.in_(owners),
                )
                .values(lease_expires_at=_db_now(conn.dialect, lease_seconds))
                .returning(items.c.id, items.c.lease_owner)
            )
            # Owners are unique per claim, but check the pair: one statement covers many rows.
            renewed.update(int(i) for i, owner in rows if held.get(int(i)) == owner)
    return renewed


def requeue_expired(
    engine: Engine, exclude: Sequence[int] = (), limit: int = ID_BATCH
) -> list[int]:
    """``running`` rows whose lease ran out on the database's clock -> ``queued``, lease
    cleared; returns their ids, to publish again. Their owner died or stopped renewing.

    One statement: of several workers sweeping at once, each row goes to exactly one. Rows in
    ``exclude`` (the caller's own, whose renewal may merely be late) are left alone. A late
    answer of the old owner is still stored (:func:`record_result` takes a billed answer from
    anyone); its retry or failure no longer applies (they need the lease).
    """
    with _write(engine) as conn:
        expired = (
            sa.select(items.c.id)
            .where(
                items.c.state == "running",
                items.c.lease_expires_at < _db_now(conn.dialect),
                items.c.id.not_in(list(exclude)) if exclude else sa.true(),
            )
            .order_by(items.c.id)
            .limit(limit)
            .scalar_subquery()
        )
        ids = conn.execute(
            sa.update(items)
            .where(
                items.c.id.in_(expired),
                items.c.state == "running",
                items.c.lease_expires_at < _db_now(conn.dialect),
            )
            .values(
                state="queued",
                lease_owner=None,
                lease_expires_at=None,
                last_error="lease expired: its worker stopped renewing it",
                queued_at=_now(),
                updated_at=_now(),
            )
            .returning(items.c.id)
        ).scalars()
        found = sorted(int(i) for i in ids)
    return found


class _Label(Protocol):
    @property
    def label(self) -> str: ...
    @property
    def confidence(self) -> float | None: ...
    @property
    def description(self) -> str | None: ...
    @property
    def risk_level(self) -> str | None: ...


class _Ext(Protocol):
    @property
    def raw(self) -> Mapping[str, Any]: ...


class _Data(Protocol):
    @property
    def result(self) -> Sequence[_Label]: ...
    @property
    def risk_level(self) -> str | None: ...
    @property
    def data_id(self) -> str | None: ...
    @property
    def ext(self) -> _Ext | None: ...


class ModerationAnswer(Protocol):
    """What :func:`record_result` reads of :class:`worker.results.ModerationResponse`."""

    @property
    def request_id(self) -> str | None: ...
    @property
    def code(self) -> object: ...
    @property
    def msg(self) -> str | None: ...
    @property
    def data(self) -> _Data | None: ...
    @property
    def raw(self) -> Mapping[str, Any]: ...


def record_result(
    engine: Engine, item_id: int, owner: str, service: str, response: ModerationAnswer
) -> bool:
    """Store a billed answer and mark the item done; False when one was already stored.

    Kept even if ``owner``'s lease expired or another worker took the item: the call was paid
    for. The unique (item_id, service) key makes a second answer a no-op, labels included.
    ``owner`` is accepted for symmetry and logging by callers; it does not gate the write.
    The answer is made storable first (:func:`storable`: no NUL characters, no NaN or
    Infinity, which PostgreSQL refuses), identically on both databases. An error raised here
    that :func:`is_outage` does not recognise will not go away by retrying.
    """
    del owner  # a billed answer is never thrown away, whoever holds the lease
    now = _now()
    data = response.data
    code = None if response.code is None else str(response.code)
    with _write(engine) as conn:
        job_id = conn.execute(sa.select(items.c.job_id).where(items.c.id == item_id)).scalar()
        if job_id is None:
            raise LookupError(f"item {item_id} does not exist")
        row = _clip(
            results,
            storable(
                {
                    "item_id": item_id,
                    "job_id": job_id,
                    "service": service,
                    "request_id": response.request_id,
                    "code": code,
                    "msg": response.msg,
                    "data_id": data.data_id if data else None,
                    "risk_level": data.risk_level if data else None,
                    "ext": dict(data.ext.raw) if data and data.ext is not None else None,
                    "raw": dict(response.raw),
                    "moderated_at": now,
                }
            ),
        )
        stmt = (
            _insert_for(conn, results)
            .values(**row)
            .on_conflict_do_nothing(index_elements=["item_id", "service"])
            .returning(results.c.id)
        )
        result_id = conn.execute(stmt).scalar()
        if result_id is None:
            return False
        labels = [
            _clip(
                result_labels,
                storable(
                    {
                        "result_id": result_id,
                        "job_id": job_id,
                        "item_id": item_id,
                        "label": label.label,
                        "confidence": label.confidence,
                        "description": label.description,
                        "risk_level": label.risk_level,
                    },
                    number=None,
                ),
            )
            for label in (data.result if data else ())
        ]
        if labels:
            conn.execute(sa.insert(result_labels), labels)
        conn.execute(
            sa.update(items)
            .where(items.c.id == item_id)
            .values(
                state="done",
                last_code=row["code"],
                last_message=row["msg"],
                last_error=None,
                lease_owner=None,
                lease_expires_at=None,
                finished_at=now,
                updated_at=now,
            )
        )
    return True


_SQLITE_OUTAGE_WORDS = ("locked", "busy", "unable to open", "disk i/o", "readonly")
_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def storable(value: Any, number: str | None = "name") -> Any:
    """``value`` with what SQL refuses replaced: NUL characters removed from every string
    (keys too) and NaN/Infinity floats replaced by their names ``"NaN"``, ``"Infinity"``,
    ``"-Infinity"`` (JSON has no such numbers; PostgreSQL's ``jsonb`` and ``text`` refuse them
    and NUL), or by None with ``number=None`` (a numeric column). Pure; a copy when anything
    changed. An OCR line may well contain a NUL, a confidence an overflow."""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, float) and not math.isfinite(value):
        if number is None:
            return None
        return "NaN" if math.isnan(value) else _NON_FINITE[value]
    if isinstance(value, Mapping):
        return {storable(k, number): storable(v, number) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v, number) for v in value]
    return value


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


_CODE_LENGTH = 64  # items.last_code


def record_retry(
    engine: Engine,
    item_id: int,
    owner: str,
    code: str,
    message: str | None,
    error: str | None,
) -> bool:
    """Hand the item back (``queued``, lease cleared) for a later attempt.

    Only while ``owner`` still holds it: a worker whose lease was taken over must not undo the
    new owner's work. Returns whether the row changed.
    """
    now = _now()
    with _write(engine) as conn:
        result = conn.execute(
            sa.update(items)
            .where(items.c.id == item_id, items.c.state == "running", items.c.lease_owner == owner)
            .values(
                state="queued",
                lease_owner=None,
                lease_expires_at=None,
                last_code=code[:_CODE_LENGTH],
                last_message=message,
                last_error=error,
                updated_at=now,
            )
        )
    return result.rowcount == 1


def record_failure(
    engine: Engine,
    item_id: int,
    owner: str,
    code: str,
    message: str | None,
    error: str | None,
) -> bool:
    """Mark the item ``failed`` for good (``imgmod retry-failed`` can reopen it).

    Never overrides ``done`` or ``rejected``, nor a live lease held by another worker.
    Returns whether the row changed.
    """
    now = _now()
    with _write(engine) as conn:
        leased_elsewhere = sa.and_(
            items.c.state == "running",
            items.c.lease_owner.is_distinct_from(owner),
            items.c.lease_expires_at >= _db_now(conn.dialect),
        )
        result = conn.execute(
            sa.update(items)
            .where(
                items.c.id == item_id,
                items.c.state.not_in(("done", "rejected")),
                ~leased_elsewhere,
            )
            .values(
                state="failed",
                lease_owner=None,
                lease_expires_at=None,
                last_code=code[:_CODE_LENGTH],
                last_message=message,
                last_error=error,
                finished_at=now,
                updated_at=now,
            )
        )
    return result.rowcount == 1


def state_counts(engine: Engine, job_id: int) -> dict[str, int]:
    """Items per state, every state listed (zero when absent), in lifecycle order."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(items.c.state, sa.func.count())
            .where(items.c.job_id == job_id)
            .group_by(items.c.state)
        ).all()
    counts = dict.fromkeys(STATES, 0)
    counts.update({state: int(n) for state, n in rows})
    return counts


def expired_or_stuck_ids(
    engine: Engine, job_id: int, *, include_queued: bool = True, batch: int = ID_BATCH
) -> Iterator[list[int]]:
    """Ids to publish again, in batches: pending, queued (optionally) and running with an
    expired lease. Keyset pagination, one short read per batch, so rows may change meanwhile;
    :func:`claim_item` settles any overlap."""
    states = ("pending", "queued") if include_queued else ("pending",)
    last = 0
    while True:
        stuck = sa.or_(
            items.c.state.in_(states),
            sa.and_(items.c.state == "running", items.c.lease_expires_at < _db_now(engine.dialect)),
        )
        with engine.connect() as conn:
            ids = list(
                conn.execute(
                    sa.select(items.c.id)
                    .where(items.c.job_id == job_id, items.c.id > last, stuck)
                    .order_by(items.c.id)
                    .limit(batch)
                ).scalars()
            )
        if not ids:
            return
        yield ids
        last = ids[-1]


def reset_failed(engine: Engine, job_id: int, code: str | None = None) -> list[int]:
    """``failed`` -> ``pending`` with attempts reset (only ``last_code == code`` when given);
    reopens the job. Returns the ids to publish again."""
    now = _now()
    where = [items.c.job_id == job_id, items.c.state == "failed"]
    if code is not None:
        where.append(items.c.last_code == code)
    with _write(engine) as conn:
        ids = [
            int(i)
            for i in conn.execute(
                sa.update(items)
                .where(*where)
                .values(state="pending", attempts=0, finished_at=None, updated_at=now)
                .returning(items.c.id)
            ).scalars()
        ]
        if ids:
            conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(finished_at=None))
    ids.sort()
    return ids


def lease_left(engine: Engine, item_id: int) -> float | None:
    """Seconds left on the lease of an open row (0 when open but not leased); None when the
    row is closed or gone. Consulted only when a claim failed, so off the hot path."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(
                items.c.state,
                items.c.lease_expires_at,
                _db_now(conn.dialect).label("now"),
            ).where(items.c.id == item_id)
        ).one_or_none()
    if row is None or row.state not in OPEN_STATES:
        return None
    expires: datetime | None = row.lease_expires_at
    if expires is None:
        return 0.0
    now: datetime = row.now
    return max(0.0, (expires - now).total_seconds())


def attempts_made(engine: Engine, job_id: int) -> int:
    """Claims made on a job's rows so far: grows with every attempt, retries included, so a
    job whose retries only wait their backoff is told apart from one whose messages are lost."""
    with engine.connect() as conn:
        total = conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(items.c.attempts), 0)).where(
                items.c.job_id == job_id
            )
        ).scalar_one()
    return int(total)
