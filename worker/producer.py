"""Producers: validated references -> SQL rows (in batches) -> one broker message per new row.

Rows are inserted before their messages are published and marked ``queued`` after, so a crash
in between leaves ``pending`` rows that ``imgmod resume`` picks up; a message is never published
for a row that does not exist.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from sqlalchemy.engine import Engine

from worker import store
from worker.sources import Accepted, Rejected

BATCH_SIZE = 2000


@dataclass
class EnqueueSummary:
    lines: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    published: int = 0
    rejected_samples: list[str] = field(default_factory=list)


def to_new_item(record: Accepted | Rejected) -> store.NewItem:
    if isinstance(record, Rejected):
        return store.NewItem(
            kind="invalid",
            ref_key=f"rejected:{record.source}:{record.line}",
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
    )


def batched(records: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(records)
    while chunk := list(islice(it, size)):
        yield chunk


Publisher = Callable[[Sequence[int]], None]


def enqueue_records(
    engine: Engine,
    job: store.Job,
    records: Iterable[Accepted | Rejected],
    publish: Publisher,
    *,
    batch_size: int = BATCH_SIZE,
    on_batch: Callable[[EnqueueSummary], None] | None = None,
) -> EnqueueSummary:
    """Insert, publish and count; memory stays bounded by ``batch_size`` whatever the input."""
    summary = EnqueueSummary()
    for chunk in batched(records, batch_size):
        good = [r for r in chunk if isinstance(r, Accepted)]
        bad = [r for r in chunk if isinstance(r, Rejected)]
        good_ids = store.insert_items(engine, job.id, [to_new_item(r) for r in good])
        new_rejected = len(store.insert_items(engine, job.id, [to_new_item(r) for r in bad]))
        if good_ids:
            publish(good_ids)
            store.mark_queued(engine, good_ids)
        summary.lines += len(chunk)
        summary.accepted += len(good_ids)
        summary.duplicates += len(good) - len(good_ids)
        summary.rejected += len(bad)
        summary.published += len(good_ids)
        for r in bad[: max(0, 5 - len(summary.rejected_samples))]:
            summary.rejected_samples.append(str(r))
        store.add_counts(
            engine,
            job.id,
            total_lines=len(chunk),
            accepted=len(good_ids),
            duplicates=len(good) - len(good_ids),
            rejected=new_rejected,
        )
        if on_batch is not None:
            on_batch(summary)
    return summary
