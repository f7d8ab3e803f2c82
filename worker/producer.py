"""Producers: validated references -> SQL rows (in batches) -> the publishing window.

Rows are inserted ``pending``; after each batch the producer tops up the broker's window
(:mod:`worker.window`), which turns the oldest ``pending`` rows ``queued`` and publishes them.
A message is never published for a row that does not exist, and the broker holds at most the
window however large the input: the rest of a job waits in SQL until workers drain the queue.

That take-publish-mark path (:meth:`worker.window.Refiller.top_up`) is the only way a message
reaches the broker: enqueueing, ``imgmod resume``, stall detection and ``imgmod retry`` all put
rows ``pending`` and top the window up; none publishes ids of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from worker import store
from worker.sources import Accepted, Rejected, read_inputs
from worker.vendor import MAX_REFERER_CHARS, InvalidParameter, validate_info_type, validate_service

if TYPE_CHECKING:
    from celery import Celery

    from worker.settings import Settings

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


def open_job(
    engine: Engine,
    settings: Settings,
    name: str,
    *,
    service: str | None = None,
    info_type: str | None = None,
    referer: str | None = None,
) -> store.Job:
    """The job ``name``: created with these request settings (``None``: the configured
    default), or found when it already has the same service.

    Validated before anything is written: the service and ``infoType`` against the vendor's
    lists, the job's referer against the vendor's header limit (it is sent for every image
    without its own). Raises :class:`worker.vendor.InvalidParameter` naming the API field, or
    ``ValueError`` when the name is taken by a job of another service.
    """
    checked_service = validate_service(service or settings.service)
    checked_info = validate_info_type(settings.info_type if info_type is None else info_type)
    if referer is not None and len(referer) > MAX_REFERER_CHARS:
        raise InvalidParameter("referer", f"longer than {MAX_REFERER_CHARS} characters")
    return store.get_or_create_job(engine, name, checked_service, checked_info, referer)


def eager_top_up(engine: Engine, app: Celery, window: int) -> TopUp:
    """The top-up for commands: publish whenever the window is not full. A command's batches
    are small, and waiting for the workers' low-water mark (half) would let them wait long."""
    from worker.window import Refiller  # imports Celery: only commands that publish pay for it

    return Refiller(engine, app, window, low_water=1.0).top_up


@dataclass(frozen=True)
class Enqueued:
    """What an enqueue did: the input's counts, and how many of the job's rows wait in SQL for
    room in the broker (published by the workers' refills as they drain the queue)."""

    summary: EnqueueSummary
    waiting: int


def enqueue_inputs(
    engine: Engine,
    job: store.Job,
    inputs: Sequence[str],
    top_up: TopUp,
    *,
    oss_region: str | None = None,
    referer: str | None = None,
    stdin: IO[bytes] | None = None,
    on_batch: Callable[[EnqueueSummary], None] | None = None,
) -> Enqueued:
    """Read ``inputs`` into ``job`` and top the window up as rows land (see
    :func:`enqueue_records`); rows without a referer of their own get ``referer`` or the
    job's."""
    records = read_inputs(
        list(inputs), oss_region=oss_region, referer=referer or job.referer, stdin=stdin
    )
    summary = enqueue_records(engine, job, records, top_up, on_batch=on_batch)
    return Enqueued(summary, store.state_counts(engine, job.id)["pending"])


def requeue_open(engine: Engine, job: store.Job, top_up: TopUp) -> int:
    """Put the job's lost work (``queued`` rows, expired leases) back to ``pending`` and top
    the window up; returns how many of its rows are back in line. For a broker that lost its
    messages: ``imgmod resume`` and stall detection. Rows beyond the window wait in SQL for the
    workers' refills, as after an enqueue."""
    total = store.reopen_open_items(engine, job.id, include_queued=True)
    top_up()
    return total


@dataclass(frozen=True)
class Retried:
    """``imgmod retry``'s outcome: failed rows put back in line, and how many of the job's rows
    wait in SQL for room in the broker."""

    count: int
    waiting: int


def retry_failed(engine: Engine, job: store.Job, top_up: TopUp, code: str | None = None) -> Retried:
    """The job's ``failed`` rows (only those whose last code is ``code`` when given) back to
    ``pending`` with fresh attempts, then a top-up: a retry of a million failed rows puts at
    most the window into the broker, like any enqueue. Check the broker before calling: the
    rows are reset first, and a broker outage afterwards leaves them for ``imgmod resume``."""
    ids = store.reset_failed(engine, job.id, code)
    top_up()
    waiting = store.state_counts(engine, job.id)["pending"] if ids else 0
    return Retried(len(ids), waiting)
