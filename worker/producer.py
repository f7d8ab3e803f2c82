"""Producers: validated references -> SQL rows (in batches) -> the publishing window.

Rows are inserted ``pending``; after each batch the producer tops up the broker's window
(:mod:`worker.window`), which turns the oldest ``pending`` rows ``queued`` and publishes them.
A message is never published for a row that does not exist, and the broker holds at most the
window however large the input: the rest of a job waits in SQL until workers drain the queue.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
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


TopUp = Callable[[], int]  # publish what fits in the window; returns how many were published


def enqueue_records(
    engine: Engine,
    job: store.Job,
    records: Iterable[Accepted | Rejected],
    top_up: TopUp,
    *,
    batch_size: int = BATCH_SIZE,
    on_batch: Callable[[EnqueueSummary], None] | None = None,
) -> EnqueueSummary:
    """Insert and count, topping the window up after each batch (so workers start while the
    input is still read); memory stays bounded by ``batch_size`` whatever the input."""
    summary = EnqueueSummary()
    for chunk in batched(records, batch_size):
        good = [r for r in chunk if isinstance(r, Accepted)]
        bad = [r for r in chunk if isinstance(r, Rejected)]
        good_ids = store.insert_items(engine, job.id, [to_new_item(r) for r in good])
        new_rejected = len(store.insert_items(engine, job.id, [to_new_item(r) for r in bad]))
        summary.lines += len(chunk)
        summary.accepted += len(good_ids)
        summary.duplicates += len(good) - len(good_ids)
        summary.rejected += len(bad)
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
        summary.published += top_up()  # after the counts: a broker error loses none
        if on_batch is not None:
            on_batch(summary)
    return summary
