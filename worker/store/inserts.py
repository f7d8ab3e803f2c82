"""New rows into ``items``, a batch at a time: the producer's insert, per database.

PostgreSQL takes a batch by ``COPY`` into a temporary table and one ``INSERT ... SELECT``;
SQLite by multi-row ``INSERT ... VALUES`` statements. Both skip a row already in the job (same
``ref_key`` and service) and return the ids inserted. Split from :mod:`worker.store.items`
(the rows' life after the insert) because this is the enqueue's hot path: every line of an
input passes through :func:`insert_rows` once, and its per-row cost is measured in
bench/RESULTS.md.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from itertools import chain
from operator import attrgetter

from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlalchemy.engine import Connection, Engine

from worker.store.engine import write
from worker.store.items import RAW_INPUT_LIMIT, NewItem, first_service
from worker.store.schema import items
from worker.store.sql import now


def insert_items(engine: Engine, job_id: int, rows: Sequence[NewItem]) -> list[int]:
    """Insert ``rows``; those already in the job (same ``ref_key``) are skipped.

    Returns the ids of the rows actually inserted, in no particular order. One multi-row
    statement per batch (SQLAlchemy's "insertmanyvalues"), one transaction for the call.
    """
    if not rows:
        return []
    with write(engine, eager=True) as conn:  # a producer's batch: see store.engine.write
        return insert_rows(conn, job_id, rows)


def insert_rows(
    conn: Connection, job_id: int, rows: Sequence[NewItem], encoded: Encoded | None = None
) -> list[int]:
    """:func:`insert_items` inside the caller's transaction (:mod:`worker.store.reuse` links
    reused rows in the same one, before any refiller can see them ``pending``).

    PostgreSQL: the rows are ``COPY``-ed into a temporary table and moved by one ``INSERT ...
    SELECT ... ON CONFLICT DO NOTHING RETURNING id`` (:func:`_copy_rows`); SQLite: multi-row
    ``INSERT ... VALUES`` (:func:`_sqlite_rows`). ``encoded``, when given, is the rows already
    written out for this database (:func:`encode_rows`, by a producer's read-ahead thread; its
    service wins over the rows')."""
    if not rows:
        return []
    for row in rows:
        if row.state not in ("pending", "rejected"):
            raise ValueError(f"new items are 'pending' or 'rejected', not {row.state!r}")
    if encoded is None:
        encoded = encode_rows(conn.dialect.name, rows, _first_if_needed(conn, job_id, rows))
    if isinstance(encoded, CopyText) and conn.dialect.name == "postgresql":
        return _copy_rows(conn, job_id, encoded, now())
    if isinstance(encoded, SqliteValues) and conn.dialect.name == "sqlite":
        return _sqlite_rows(conn, job_id, encoded, now())
    raise ValueError(f"rows encoded as {type(encoded).__name__} for {conn.dialect.name}")


def _first_if_needed(conn: Connection, job_id: int, rows: Sequence[NewItem]) -> str | None:
    """A row without a service is the job's first service's (filled in as the values are
    built: a dataclasses.replace per row was a tenth of the producer's CPU)."""
    return first_service(conn, job_id) if any(row.service is None for row in rows) else None


_FIELDS = tuple(f.name for f in fields(NewItem))
_COPY_COLUMNS = (*_FIELDS, "job_id", "attempts", "created_at", "updated_at", "finished_at")
_values_of = attrgetter(*_FIELDS)  # a row's values in _FIELDS order, one C call
_RAW_INPUT = _FIELDS.index("raw_input")
_LAST_MODIFIED = _FIELDS.index("last_modified")
_SERVICE = _FIELDS.index("service")


def _row_values(row: NewItem, first: str | None) -> list[object]:
    """A row's values in ``_FIELDS`` order, its raw input clipped and its service filled in."""
    values = list(_values_of(row))
    if row.raw_input is not None:
        values[_RAW_INPUT] = row.raw_input[:RAW_INPUT_LIMIT]
    if row.service is None:
        values[_SERVICE] = first
    return values


_STAGING = "imgmod_new_items"
# Built from this module's constants only (column names, the table's name): nothing from input.
_COLUMN_LIST = ", ".join(_COPY_COLUMNS)
_CREATE_STAGING = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGING} ON COMMIT DELETE ROWS AS "  # noqa: S608
    f"SELECT {_COLUMN_LIST}, 0::bigint AS seq FROM items WITH NO DATA"
)


def _copy_in(columns: Sequence[str]) -> str:
    return f"COPY {_STAGING} ({', '.join(columns)}, seq) FROM STDIN"


def _move_in(columns: Sequence[str]) -> str:
    """The batch from the staging table into ``items``: its own columns as copied, the
    columns every row of the batch shares as parameters."""
    own = ", ".join(columns)
    return (
        f"INSERT INTO items ({own}, job_id, attempts, created_at, updated_at, finished_at) "  # noqa: S608
        f"SELECT {own}, %(job_id)s, 0, %(moment)s, %(moment)s, "
        f"CASE WHEN state = 'rejected' THEN %(moment)s::timestamptz END FROM {_STAGING} "
        "ORDER BY seq ON CONFLICT (job_id, ref_key, service) DO NOTHING RETURNING id"
    )


# COPY's text format: backslash, tab, newline and carriage return are escaped; NULL is \N.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_line(values: Sequence[object]) -> str:
    """One row in PostgreSQL's COPY text format (pure): a tab-separated line, ``\\N`` for
    NULL, datetimes in ISO 8601 with their offset, text escaped so any key survives."""
    return "\t".join([_copy_text(value) for value in values]) + "\n"


def _copy_text(value: object) -> str:
    if value is None:
        return "\\N"
    if value.__class__ is str:
        text: str = value
        return text.translate(_COPY_ESCAPES) if _NEEDS_ESCAPE(text) else text
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


_NEEDS_ESCAPE = re.compile(r"[\\\t\n\r]").search  # most text needs none: skip translate


# Rows per statement. The statement's text is the same for every full chunk, so the sqlite3
# module's statement cache prepares it once per connection. Its values are anonymous ``?``s:
# numbered ones (``?NNN``, as before) made SQLite 3.40's prepare quadratic in the parameters
# (500 rows: 142 ms, 1,000: 0.5 s), paid inside a fresh job's first write lock while the workers
# waited to claim its first messages; anonymous ones prepare in 3 ms. At 500 rows a statement,
# 100,000 references insert in 2.5 s (2.4 s at 1,000, 2.9 s at 250; probe ~105 ms). 500 x 21
# values and the 2 shared ones stay far under SQLite's 32,766 parameters.
_SQLITE_ROWS = 500
_SQLITE_COLUMNS = ", ".join(_COPY_COLUMNS)
_STATE = _FIELDS.index("state")


@dataclass(frozen=True)
class SqliteValues:
    """New rows as the parameters of :func:`_sqlite_rows`' statements: per statement, the
    values of up to ``_SQLITE_ROWS`` rows in ``_FIELDS`` order, flat."""

    chunks: tuple[tuple[object, ...], ...]


def sqlite_values(rows: Sequence[NewItem], service: str | None) -> SqliteValues:
    """``rows`` as SQLite binds them (pure), a row without a service under ``service``;
    ``last_modified`` by the column's own processor (the stored text is the same)."""
    flat: list[list[object]] = []
    for row in rows:
        values = _row_values(row, service)
        if row.last_modified is not None:
            values[_LAST_MODIFIED] = _SQLITE_TIME(row.last_modified)
        flat.append(values)
    return SqliteValues(
        tuple(
            tuple(chain.from_iterable(flat[start : start + _SQLITE_ROWS]))
            for start in range(0, len(flat), _SQLITE_ROWS)
        )
    )


@functools.lru_cache(maxsize=8)
def _sqlite_statement(rows: int) -> str:
    """The insert of ``rows`` rows: ``?1`` is the job, ``?2`` the moment (created, updated,
    and finished for a rejected row), named once in a ``WITH``; each row's own values follow,
    anonymous (see ``_SQLITE_ROWS`` for why not numbered). ``WHERE true`` is SQLite's way to
    tell an ``INSERT ... SELECT``'s upsert clause from a join's ``ON``."""
    width = len(_FIELDS)
    row = "(" + ", ".join(["?"] * width) + ")"
    own = ", ".join(f"v.column{i + 1}" for i in range(width))
    return (
        "WITH shared(job_id, moment) AS (SELECT ?1, ?2) "  # noqa: S608 - constants only
        f"INSERT INTO items ({_SQLITE_COLUMNS}) "
        f"SELECT {own}, shared.job_id, 0, shared.moment, shared.moment, "
        f"CASE v.column{_STATE + 1} WHEN 'rejected' THEN shared.moment END "
        f"FROM shared, (VALUES {', '.join([row] * rows)}) AS v WHERE true "
        "ON CONFLICT (job_id, ref_key, service) DO NOTHING RETURNING id"
    )


def _sqlite_rows(
    conn: Connection, job_id: int, values: SqliteValues, moment: datetime
) -> list[int]:
    """Why not SQLAlchemy's insertmanyvalues here: it runs every value of every row through
    its bind processors (four datetimes a row) and compiles per batch, half the insert's
    CPU. The rows' timestamps are one moment, converted once by the column's own processor
    and bound once per statement."""
    shared = (job_id, _SQLITE_TIME(moment))
    width = len(_FIELDS)
    ids: list[int] = []
    # The DB-API cursor itself: SQLAlchemy's result would make a Row per returned id.
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        for chunk in values.chunks:
            cursor.execute(_sqlite_statement(len(chunk) // width), shared + chunk)
            ids.extend([r[0] for r in cursor.fetchall()])
    finally:
        cursor.close()
    return ids


def _sqlite_time_processor() -> Callable[[datetime], object]:
    """How the ``UTCDateTime`` columns store a moment in SQLite (their own bind processor)."""
    dialect = sqlite_dialect()
    process = items.c.created_at.type.dialect_impl(dialect).bind_processor(dialect)
    assert process is not None  # noqa: S101 - SQLAlchemy's SQLite DateTime always has one
    return process


_SQLITE_TIME = _sqlite_time_processor()


@dataclass(frozen=True)
class CopyText:
    """New rows in COPY's text format: the columns some row has a value in, and a line per
    row (those values, then the row's position in the batch)."""

    columns: tuple[str, ...]
    text: str


def copy_text(rows: Sequence[NewItem], service: str | None) -> CopyText:
    """``rows`` as :func:`_copy_rows` sends them (pure), a row without a service under
    ``service``. Only the columns some row of the batch has a value in are written (a URL
    batch: 8 of 21); what every row shares (job, timestamps) is a parameter of the move."""
    value_rows = [_row_values(row, service) for row in rows]
    by_column = list(zip(*value_rows, strict=True))
    keep = [i for i, column in enumerate(by_column) if column.count(None) != len(column)]
    lines = [
        copy_line(values)
        for values in zip(*[by_column[i] for i in keep], range(len(rows)), strict=True)
    ]
    return CopyText(tuple(_FIELDS[i] for i in keep), "".join(lines))


Encoded = CopyText | SqliteValues


def encode_rows(dialect: str, rows: Sequence[NewItem], service: str | None) -> Encoded:
    """``rows`` written out for ``dialect``'s insert (pure), a row without a service under
    ``service``: what a producer's read-ahead thread makes while the batch before is inserted."""
    if dialect == "postgresql":
        return copy_text(rows, service)
    if dialect == "sqlite":
        return sqlite_values(rows, service)
    raise ValueError(f"unsupported database {dialect}")


def _copy_rows(conn: Connection, job_id: int, copy: CopyText, moment: datetime) -> list[int]:
    """Why COPY: a multi-row ``INSERT ... VALUES`` costs the client SQLAlchemy's per-value
    bind processing and the server a parse of every literal; COPY streams plain text that the
    server reads at memory speed, and a text of only the batch's non-empty columns costs both
    halves a third of the whole row's (``imgmod enqueue`` on PostgreSQL, bench/RESULTS.md).
    The temporary table lives as long as the pooled connection and empties at each commit
    (``CREATE ... IF NOT EXISTS`` is a no-op after the first batch); ``ON CONFLICT DO
    NOTHING`` keeps "a row already in the job is skipped" exactly as the plain insert does,
    and ids come back in input order (``ORDER BY seq``)."""
    conn.exec_driver_sql(_CREATE_STAGING)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        # One read of the whole text: psycopg2 reads 8 KiB at a time by default, and each read
        # needs the GIL back from the thread reading the next batch.
        cursor.copy_expert(
            _copy_in(copy.columns), io.StringIO(copy.text), size=max(1, len(copy.text))
        )
        cursor.execute(_move_in(copy.columns), {"job_id": job_id, "moment": moment})
        ids = [int(r[0]) for r in cursor.fetchall()]
        cursor.execute(f"TRUNCATE {_STAGING}")  # a second call in this transaction starts empty
    finally:
        cursor.close()
    return ids
