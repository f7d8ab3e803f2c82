"""Input records as new rows, a batch at a time: what the producer inserts (pure).

A batch is made in the producer's read-ahead thread (:func:`worker.readahead.read_ahead`)
while the batch before it is inserted, so everything here is Python work taken off the
inserting thread: each record's row (its image's identity and content key included) and the
batch written out for the database's insert (PostgreSQL's COPY text, SQLite's parameters), once
per service of the job.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import islice
from typing import Any

from worker import store
from worker.identity import keys_of
from worker.sources import Accepted, Rejected
from worker.sources.folder import LocalImage
from worker.sources.oss_prefix import ListedObject


def to_new_item(record: Accepted | Rejected) -> store.NewItem:
    if isinstance(record, Rejected):
        return store.NewItem(
            kind="invalid",
            ref_key=store.rejected_ref_key(record.source, record.line, record.identity),
            image_url=None,
            oss_bucket=None,
            oss_object=None,
            oss_region=None,
            data_id=None,
            referer=None,
            source=record.source,
            line=record.line,
            state="rejected",
            last_error=f"line {record.line}: {record.field}: {record.reason}",
            raw_input=record.raw[:2000],
        )
    ref = record.ref
    etag = size = last_modified = None
    if isinstance(record, ListedObject):  # what the OSS listing said of the object
        etag, size, last_modified = record.etag, record.size, record.last_modified
    elif isinstance(record, LocalImage):  # a local file's size at enqueue
        size = record.size
    keys = keys_of(
        image_url=ref.image_url,
        oss_bucket=ref.oss_bucket,
        oss_object=ref.oss_object,
        etag=etag,
        size=size,
        sha256=ref.sha256,
    )
    # Built once, keys included: a second pass through dataclasses.replace was a tenth of a
    # listing's CPU.
    return store.NewItem(
        kind=ref.kind,
        ref_key=ref.key,
        image_url=ref.image_url,
        oss_bucket=ref.oss_bucket,
        oss_object=ref.oss_object,
        oss_region=ref.oss_region,
        data_id=ref.data_id,
        referer=ref.referer,
        source=record.source,
        line=record.line,
        state="pending",
        local_path=ref.local_path,
        sha256=ref.sha256,
        etag=etag,
        size=size,
        last_modified=last_modified,
        identity=keys.identity,
        content_key=keys.content_key,
    )


def with_keys(item: store.NewItem) -> store.NewItem:
    """``item`` with its image's identity and content key (:mod:`worker.identity`), which the
    store looks up to reuse an earlier answer, and keeps for later jobs to find.
    (:func:`to_new_item` already sets them; this is for rows built by hand.)"""
    if item.identity is not None or item.content_key is not None:
        return item
    keys = keys_of(
        image_url=item.image_url,
        oss_bucket=item.oss_bucket,
        oss_object=item.oss_object,
        etag=item.etag,
        size=item.size,
        sha256=item.sha256,
    )
    if keys.identity is None and keys.content_key is None:
        return item
    return replace(item, identity=keys.identity, content_key=keys.content_key)


def batched(records: Iterable[Any], size: int, first: int | None = None) -> Iterator[list[Any]]:
    """``records`` in lists of ``size``; with ``first`` (a smaller one), the first list holds
    that many and each next one twice the last, up to ``size``."""
    it = iter(records)
    take = size if first is None else min(first, size)
    while chunk := list(islice(it, take)):
        yield chunk
        take = min(2 * take, size)


@dataclass(frozen=True)
class Batch:
    """One batch of input lines as rows (the accepted records themselves are let go: at
    10,000 lines a batch, three batches in flight, they were a third of the enqueue's memory)."""

    lines: int
    rows: list[store.NewItem]  # one per accepted line
    rejected: list[Rejected]
    rejected_rows: list[store.NewItem]
    # The accepted rows written out for the database, per service (the service filled in).
    encoded: dict[str, store.Encoded]


def prepare_batches(
    records: Iterable[Accepted | Rejected],
    size: int,
    dialect: str,
    services: Sequence[str],
    first: int | None = None,
) -> Iterator[Batch]:
    """``records`` in batches of ``size`` (the first of ``first``, when given), each with its
    rows, and the accepted rows written out for ``dialect`` once per service of ``services``."""
    for chunk in batched(records, size, first):
        rows = [to_new_item(r) for r in chunk if isinstance(r, Accepted)]
        bad = [r for r in chunk if isinstance(r, Rejected)]
        encoded = {s: store.encode_rows(dialect, rows, s) for s in services} if rows else {}
        yield Batch(len(chunk), rows, bad, [to_new_item(r) for r in bad], encoded)
