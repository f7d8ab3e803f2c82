"""Statement pieces every store module shares: the clocks, the dialect's INSERT, clipping.

Lease times (granting, renewing, expiring, comparing) are taken from the **database's** clock
(:func:`db_now`), inside the statement that uses them, so a worker host whose clock is off can
neither take a live lease nor lose its own early; other timestamps (``updated_at``,
``moderated_at``...) are informative and come from the calling process (:func:`now`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect

from worker.store.migrate import SchemaError
from worker.store.schema import UTCDateTime

ID_BATCH = 1000  # ids per statement / per yielded batch


def now() -> datetime:
    """This process's clock, for informative timestamps (never for leases)."""
    return datetime.now(timezone.utc)


def db_now(
    dialect: Dialect | str, plus_seconds: float | sa.ColumnElement[float] = 0.0
) -> sa.ColumnElement[datetime]:
    """The database server's "now" (plus ``plus_seconds``), as SQL evaluated by the statement.

    Leases are granted by one host and judged by another; only the database's clock is the
    same for both. SQLite: ``strftime`` in the stored text format (naive UTC, microseconds).
    PostgreSQL: ``clock_timestamp()``, the real time, not the transaction's start.
    ``plus_seconds`` may be a bound parameter, for a statement built once and run many times.
    """
    name = dialect if isinstance(dialect, str) else dialect.name
    if name == "sqlite":
        modifier = (
            sa.func.printf("%+.6f seconds", plus_seconds)
            if isinstance(plus_seconds, sa.ColumnElement)
            else sa.literal(f"{plus_seconds:+.6f} seconds")
        )
        text = sa.func.strftime("%Y-%m-%d %H:%M:%f", "now", modifier).op("||")(sa.literal("000"))
        return sa.type_coerce(text, UTCDateTime())
    clock: sa.ColumnElement[Any] = sa.func.clock_timestamp()
    if isinstance(plus_seconds, sa.ColumnElement):
        clock = clock + sa.func.make_interval(0, 0, 0, 0, 0, 0, plus_seconds)
    elif plus_seconds:
        clock = clock + sa.literal(timedelta(seconds=plus_seconds), sa.Interval())
    return sa.type_coerce(clock, UTCDateTime())


def clip(table: sa.Table, values: dict[str, Any]) -> dict[str, Any]:
    """Cut strings to their column's length: PostgreSQL refuses an over-long ``varchar``, and
    an odd value the service sent back (a long code, a request id) must never cost a billed
    answer its row. SQLite ignores lengths; this keeps both databases holding the same data."""
    for name, value in values.items():
        if isinstance(value, str):
            length = getattr(table.c[name].type, "length", None)
            if length is not None and len(value) > length:
                values[name] = value[:length]
    return values


def insert_for(conn: Connection, table: sa.Table) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT DO NOTHING."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table)
    raise SchemaError(f"unsupported database {conn.dialect.name}; use SQLite or PostgreSQL")


def chunks(ids: Sequence[int], size: int = ID_BATCH) -> Iterator[list[int]]:
    """``ids`` in lists of at most ``size``: one statement each keeps parameter lists short."""
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])
