"""The producer's batch insert (worker.store.inserts) on SQLite and PostgreSQL: every column of
every kind of row stored as given, whatever else the batch holds.

PostgreSQL copies only the columns some row of the batch has a value in, and passes what the
batch shares (job, timestamps) as parameters; these tests hold that shortcut to what the rows
say, column by column, including a value that only the last row of a batch has."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from worker import store

pytestmark = pytest.mark.service

MODIFIED = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)


def _row(kind: str, ref_key: str, line: int, **given: object) -> store.NewItem:
    """A row of ``kind``: every reference field empty but those ``given``."""
    values: dict[str, object] = dict.fromkeys(
        ("image_url", "oss_bucket", "oss_object", "oss_region", "data_id", "referer")
    )
    values.update(source="in.txt", state="pending")
    values.update(given)
    return store.NewItem(kind=kind, ref_key=ref_key, line=line, **values)  # type: ignore[arg-type]


def _url(n: int, **extra: object) -> store.NewItem:
    url = f"https://example.com/{n}.jpg"
    return _row("url", url, n, image_url=url, **extra)


def _mixed_batch() -> list[store.NewItem]:
    listed = _row(
        "oss",
        "oss://bucket/a b/\u00e9t\u00e9.png",
        2,
        oss_bucket="bucket",
        oss_object="a b/\u00e9t\u00e9.png",
        oss_region="cn-shanghai",
        data_id="d-2",
        source="oss://bucket/a b/",
        etag='"0123456789ABCDEF0123456789ABCDEF"',
        size=12345,
        last_modified=MODIFIED,
        identity="oss:" + "1" * 64,
        content_key="md5:0123456789abcdef0123456789abcdef:12345",
    )
    local = _row(
        "file",
        "file:/srv/photos/x.png",
        3,
        source="/srv/photos",
        local_path="/srv/photos/x.png",
        sha256="a" * 64,
        size=99,
        identity="sha256:" + "a" * 64,
        content_key="sha256:" + "a" * 64,
    )
    rejected = _row(
        "invalid",
        "rejected:in.txt:4",
        4,
        state="rejected",
        last_error="line 4: imageUrl: a tab\there, a backslash \\ and\na newline",
        raw_input="x\ty\\z\r\n" + "q" * 3000,
    )
    return [
        _url(1, identity="url:" + "0" * 64),
        listed,
        local,
        rejected,
        _url(5, service="aigcDetector_global"),  # a service of its own; the others: the job's
        _url(6, referer="https://ref.example.com/", data_id="only-the-last-row-has-these"),
    ]


def _stored(engine: sa.Engine, ids: list[int]) -> list[sa.Row]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(store.items).where(store.items.c.id.in_(ids)).order_by(store.items.c.id)
            )
        )


def test_every_column_of_every_kind_of_row_is_stored_as_given(engine) -> None:
    job = store.get_or_create_job(engine, "inserts", "baselineCheck_global", "")
    rows = _mixed_batch()
    ids = store.insert_items(engine, job.id, rows)
    assert len(ids) == len(rows)
    stored = _stored(engine, ids)
    by_key = {row.ref_key: row for row in stored}
    for given in rows:
        row = by_key[given.ref_key]
        for f in fields(store.NewItem):
            expected = getattr(given, f.name)
            if f.name == "service" and expected is None:
                expected = "baselineCheck_global"
            if f.name == "raw_input" and expected is not None:
                expected = expected[: store.RAW_INPUT_LIMIT]
            assert getattr(row, f.name) == expected, (given.ref_key, f.name)
    for row in stored:
        assert (row.job_id, row.attempts) == (job.id, 0)
        assert row.created_at == row.updated_at
        assert (row.finished_at is not None) == (row.state == "rejected")
        assert row.lease_owner is None and row.queued_at is None


def test_a_batch_of_plain_urls_leaves_every_other_column_empty(engine) -> None:
    job = store.get_or_create_job(engine, "urls", "baselineCheck_global", "")
    ids = store.insert_items(engine, job.id, [_url(n) for n in range(3)])
    for row in _stored(engine, ids):
        assert row.identity is None and row.etag is None and row.size is None
        assert row.last_modified is None and row.finished_at is None
        assert row.service == "baselineCheck_global" and row.source == "in.txt"


def test_a_second_batch_in_the_same_job_skips_what_the_first_inserted(engine) -> None:
    job = store.get_or_create_job(engine, "twice", "baselineCheck_global", "")
    first = store.insert_items(engine, job.id, _mixed_batch())
    again = store.insert_items(engine, job.id, [*_mixed_batch(), _url(7)])
    assert len(first) == 6 and len(again) == 1
    (row,) = _stored(engine, again)
    assert row.ref_key == "https://example.com/7.jpg"


def test_a_batch_longer_than_one_statement_stores_every_row_once(engine) -> None:
    """SQLite inserts 500 rows a statement: 1,234 rows cross two full statements and end in a
    short one, with a duplicate of the first row in the last."""
    job = store.get_or_create_job(engine, "long", "baselineCheck_global", "")
    rows = [_url(n, data_id=f"d-{n}") for n in range(1234)] + [_url(0)]
    ids = store.insert_items(engine, job.id, rows)
    assert len(ids) == 1234 and len(set(ids)) == 1234
    stored = {row.ref_key: row.data_id for row in _stored(engine, ids)}
    assert stored == {f"https://example.com/{n}.jpg": f"d-{n}" for n in range(1234)}


def test_sqlite_statements_number_only_the_two_values_every_row_shares() -> None:
    """A numbered parameter (``?NNN``) makes SQLite 3.40's prepare quadratic in the
    statement's parameters: 142 ms for 500 rows, paid inside a fresh job's first write lock
    while the workers wait to claim its first messages. Only the job and the moment are
    numbered; each row's own values are anonymous, in order after them."""
    import re

    from worker.store.inserts import _FIELDS, _sqlite_statement

    for rows in (1, 2, 500):
        statement = _sqlite_statement(rows)
        assert re.findall(r"\?(\d+)", statement) == ["1", "2"]
        assert statement.count("?") == 2 + rows * len(_FIELDS)
