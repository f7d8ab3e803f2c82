"""Statement pieces every store module shares: the clocks, the dialect's INSERT, clipping.

Lease times (granting, renewing, expiring, comparing) are taken from the **database's** clock
(:func:`db_now`), inside the statement that uses them, so a worker host whose clock is off can
neither take a live lease nor lose its own early; other timestamps (``updated_at``,
``moderated_at``...) are informative and come from the calling process (:func:`now`).
"""

from __future__ import annotations

import functools
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
    lengths = _lengths(table)
    for name, value in values.items():
        if isinstance(value, str):
            length = lengths.get(name)
            if length is not None and len(value) > length:
                values[name] = value[:length]
    return values


@functools.cache
def _lengths(table: sa.Table) -> dict[str, int]:
    """The table's column lengths, looked up once (:func:`clip` runs on every answer and label
    a worker stores, and a column look-up costs more than the test)."""
    found = {column.name: getattr(column.type, "length", None) for column in table.c}
    return {name: length for name, length in found.items() if length is not None}


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


ROWS_PER_INSERT = 500  # rows per multi-row INSERT: SQLite allows 32,766 parameters


def insert_values(
    conn: Connection,
    table: sa.Table,
    columns: tuple[str, ...],
    rows: Sequence[Sequence[Any]],
    suffix: str = "",
) -> list[tuple[Any, ...]]:
    """Insert ``rows`` (values in ``columns`` order) with one multi-row ``INSERT ... VALUES``
    per :data:`ROWS_PER_INSERT`, run as the driver's own SQL; the rows a ``RETURNING`` in
    ``suffix`` (driver SQL too, e.g. ``ON CONFLICT (...) DO NOTHING RETURNING id``) returns,
    unconverted (plain ids and strings only).

    Why not Core: on the hot path (a message's results and labels) SQLAlchemy's per-row
    parameter handling and per-execution setup cost more CPU than the database's work. The
    values still go through each column type's own bind processor (JSON text, SQLite's
    datetime text, UTC times), so a row is stored exactly as a Core INSERT stores it."""
    if not rows:
        return []
    processors = _bind_processors(conn.dialect, table, columns)
    returned: list[tuple[Any, ...]] = []
    for start in range(0, len(rows), ROWS_PER_INSERT):
        part = rows[start : start + ROWS_PER_INSERT]
        params: list[Any] = []
        for row in part:
            params.extend(
                value if process is None else process(value)
                for value, process in zip(row, processors, strict=True)
            )
        statement = _values_statement(
            conn.dialect.paramstyle, table.name, columns, len(part), suffix
        )
        result = conn.exec_driver_sql(statement, tuple(params))
        if result.returns_rows:
            returned.extend(tuple(found) for found in result)
    return returned


_PROCESSORS: dict[tuple[str, str, tuple[str, ...]], tuple[Any, ...]] = {}


def _bind_processors(
    dialect: Dialect, table: sa.Table, columns: tuple[str, ...]
) -> tuple[Any, ...]:
    """Each column type's bind processor (None: the value goes as it is), once per database
    kind: imgmod's engines all use the dialect's defaults (no custom JSON serializer)."""
    key = (dialect.name, table.name, columns)
    found = _PROCESSORS.get(key)
    if found is None:
        found = _PROCESSORS[key] = tuple(
            table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in columns
        )
    return found


@functools.lru_cache(maxsize=1024)
def _values_statement(
    paramstyle: str, table: str, columns: tuple[str, ...], n: int, suffix: str
) -> str:
    """``INSERT INTO table (columns) VALUES (...), ... suffix`` for ``n`` rows, in the
    driver's placeholder style (psycopg2: ``%s``; sqlite3: ``?``); names double-quoted, as
    both databases read them."""
    if paramstyle in ("format", "pyformat"):
        mark = "%s"
    elif paramstyle == "qmark":
        mark = "?"
    else:
        raise SchemaError(f"unsupported driver parameter style {paramstyle}")
    names = ", ".join(f'"{name}"' for name in columns)
    one = "(" + ", ".join([mark] * len(columns)) + ")"
    values = ", ".join([one] * n)
    # names from the schema and the caller's constant suffix; every value is a placeholder
    return f'INSERT INTO "{table}" ({names}) VALUES {values} {suffix}'.rstrip()  # noqa: S608
