"""Schema migrations (Alembic): finding them, applying them, and checking a database is current.

The migrations live in the top-level ``migrations/`` directory and ship in the wheel as
``worker/_migrations`` (:func:`find_migrations`); there is no alembic.ini, the ``Config`` is
built here. A worker never upgrades a shared PostgreSQL database on its own
(:func:`ensure_schema`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.store.engine import make_engine, safe_url

_MIGRATION_LOCK_KEY = 0x696D676D6F64  # "imgmod": pg_advisory_xact_lock key for upgrades


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


# This file is worker/store/migrate.py: the ``worker`` package is two levels up.
MIGRATIONS_DIR = find_migrations(Path(__file__).resolve().parents[1])


class SchemaError(RuntimeError):
    """The database's schema is missing, older or newer than this imgmod expects."""


def alembic_config(connection: Connection | None = None) -> Any:
    """Alembic's ``Config`` for imgmod's migrations, migrating on ``connection`` when given."""
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

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {rev.revision for rev in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


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
        with engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            if sqlite:
                # Batch mode rebuilds a table (copy, drop, rename) that other rows reference:
                # with foreign keys on, its DROP fails on any populated database. They are off
                # for the upgrade (set before the transaction: SQLite ignores the pragma inside
                # one) and every reference is checked before the commit instead.
                conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
            conn.execution_options(imgmod_write=True)
            with conn.begin():
                if not sqlite:
                    conn.execute(
                        sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY}
                    )
                command.upgrade(alembic_config(conn), revision)
                if sqlite and (broken := conn.exec_driver_sql("PRAGMA foreign_key_check").first()):
                    raise SchemaError(f"the upgrade would break a reference: {tuple(broken)}")
    finally:
        engine.dispose()


def check_schema(engine: Engine) -> None:
    """Raise :class:`SchemaError` unless the database is exactly at this imgmod's head."""
    current, head = current_revision(engine), head_revision()
    if current == head:
        return
    where = safe_url(engine)
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


def ensure_schema(url: str, *, eager_writes: bool = False) -> Engine:
    """An engine whose schema is current: SQLite is migrated on first use, others only checked.

    A shared PostgreSQL database is upgraded deliberately (``imgmod db upgrade``), never as a
    side effect of starting a worker; an embedded SQLite file belongs to this installation.
    ``eager_writes``: see :func:`worker.store.engine.make_engine` (commands, not workers).
    """
    engine = make_engine(url, eager_writes=eager_writes)
    if engine.dialect.name == "sqlite":
        current = current_revision(engine)
        if current is None or (current != head_revision() and current in _known_revisions()):
            upgrade(url)
    check_schema(engine)
    return engine
