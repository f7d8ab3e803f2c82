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

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from itertools import chain, groupby, islice
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from worker import store
from worker.new_rows import Batch, prepare_batches
from worker.oss import MAX_KEYS, Page, list_page
from worker.readahead import read_ahead
from worker.sources import Accepted, Rejected, check_input, read_inputs
from worker.sources.folder import folder_records
from worker.sources.kinds import kind_of
from worker.sources.oss_prefix import (
    Filters,
    page_records,
    parse_prefix,
    prefetched,
)
from worker.sources.records import Defaults
from worker.vendor import (
    MAX_REFERER_CHARS,
    InvalidParameter,
    service_not_offered,
    validate_info_type,
    validate_services,
)

if TYPE_CHECKING:
    from celery import Celery

    from worker.settings import Settings

# References per insert transaction. Why 10,000: a batch's commit writes every index page it
# touched and an image's identity (a digest) lands on a random page of its index, so larger
# batches share pages (SQLite, a million rows: 9,700/s at 2,000, 15,500/s at 10,000; memory:
# at most three batches held, read_ahead depth 1; bench/RESULTS.md).
BATCH_SIZE = 10_000
# The first batch is smaller: its rows are the workers' first messages, and a full batch kept
# them waiting for its whole insert (10,000 rows: 0.3 s before the first call, on a 2-core box
# whose probe reads ~130 ms; 500 rows are a few seconds of calls at a 100/s cap). Each next
# batch doubles up to BATCH_SIZE (new_rows.batched): on SQLite the workers' first claims wait
# for the second batch's write lock, 0.2 s at 9,500 rows, 0.02 s at 1,000.
FIRST_BATCH = 500


@dataclass
class EnqueueSummary:
    lines: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    published: int = 0
    skipped: int = 0  # listed objects the filters passed over (not recorded)
    reused: int = 0  # accepted rows that took a stored answer: done, no call
    rejected_samples: list[str] = field(default_factory=list)


def reuse_scope(job: store.Job, *, rescan: bool, reuse_urls: bool) -> store.ReuseScope:
    """Which stored answers a job's new rows may take: none with ``--rescan`` (call for every
    image, e.g. after the vendor updated its models; copies in flight still wait for one
    call); URL rows only with ``--reuse-urls``."""
    return store.ReuseScope(job.services[0], job.info_type, urls=reuse_urls, stored=not rescan)


TopUp = Callable[[], int]  # publish what fits in the window; returns how many were published


def enqueue_records(
    engine: Engine,
    job: store.Job,
    records: Iterable[Accepted | Rejected],
    top_up: TopUp,
    *,
    batch_size: int = BATCH_SIZE,
    first_batch: int = FIRST_BATCH,
    on_batch: Callable[[EnqueueSummary], None] | None = None,
    summary: EnqueueSummary | None = None,
    reuse: store.ReuseScope | None = None,
) -> EnqueueSummary:
    """Insert and count, topping the window up after each batch (so workers start while the
    input is still read); memory stays bounded by ``batch_size`` whatever the input, and the
    first batch holds ``first_batch`` (fewer, so the workers start sooner). Counts add to
    ``summary`` when given (one summary over several inputs).

    With ``reuse``, a new row whose image already has a stored answer in that scope takes a
    copy of it in its insert's transaction (:func:`worker.store.insert_reusing`): it is
    ``done`` before the window could publish it, so no worker ever calls for it.
    """
    summary = EnqueueSummary() if summary is None else summary
    # The next batch is read, validated and turned into rows while this one is inserted.
    # There, the rows are also written out for the database's insert, once per service.
    batches = prepare_batches(
        records, batch_size, engine.dialect.name, job.services, first=first_batch
    )
    inserted = 0
    # The first batch is inserted and published before the reading ahead starts: its thread
    # would hold the GIL half the time while the first messages are made, and the workers
    # wait for those (the first publish came 20-40 ms later on PostgreSQL, bench/RESULTS.md).
    batches = iter(batches)
    first = list(islice(batches, 1))
    for batch in chain(first, read_ahead(batches, depth=1, name="enqueue-read-ahead")):
        good_ids, reused = _insert_per_service(engine, job, batch, reuse)
        summary.reused += reused
        new_rejected = len(store.insert_items(engine, job.id, batch.rejected_rows))
        inserted += len(good_ids) * len(job.services) + new_rejected
        # Before the window takes rows: its statement is planned from the table's statistics.
        store.refresh_planner_statistics(engine, inserted)
        duplicates = len(batch.rows) - len(good_ids)
        summary.lines += batch.lines
        summary.accepted += len(good_ids)
        summary.duplicates += duplicates
        summary.rejected += len(batch.rejected)
        for r in batch.rejected[: max(0, 5 - len(summary.rejected_samples))]:
            summary.rejected_samples.append(str(r))
        store.add_counts(
            engine,
            job.id,
            total_lines=batch.lines,
            accepted=len(good_ids),
            duplicates=duplicates,
            rejected=new_rejected,
        )
        summary.published += top_up()  # after the counts: a broker error loses none
        if on_batch is not None:
            on_batch(summary)
    return summary


def _insert_per_service(
    engine: Engine, job: store.Job, batch: Batch, reuse: store.ReuseScope | None
) -> tuple[list[int], int]:
    """Insert ``rows`` once per service of the job (one row per reference and service, each
    linked to stored answers of its own service); returns the ids inserted under the first
    service (one per new reference: a reference is new under all its services or none, as the
    services of a job never change) and the (reference, service) rows that reused an answer."""
    ids: list[int] | None = None
    reused = 0
    rows = batch.rows
    for service in job.services:
        # The rows as written out for this service (its name filled in) are what is inserted.
        encoded = batch.encoded.get(service)
        scope = None if reuse is None else replace(reuse, service=service)
        inserted = store.insert_reusing(engine, job.id, rows, scope, encoded)
        reused += inserted.reused
        ids = inserted.ids if ids is None else ids
    return ids or [], reused


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
    default; ``service`` may name several, comma separated: every reference is asked each),
    or found when it already has the same services.

    Validated before anything is written: the service and ``infoType`` against the vendor's
    lists, the job's referer against the vendor's header limit (it is sent for every image
    without its own). Raises :class:`worker.vendor.InvalidParameter` naming the API field, or
    ``ValueError`` when the name is taken by a job of another service.
    """
    checked_services = validate_services(service or settings.service)
    checked_info = validate_info_type(settings.info_type if info_type is None else info_type)
    for checked in checked_services:
        if (refusal := service_not_offered(settings.endpoint, checked)) is not None:
            raise InvalidParameter("Service", refusal)  # the region table's answer, before a write
    if referer is not None and len(referer) > MAX_REFERER_CHARS:
        raise InvalidParameter("referer", f"longer than {MAX_REFERER_CHARS} characters")
    return store.get_or_create_job(engine, name, checked_services, checked_info, referer)


def eager_top_up(engine: Engine, app: Celery, window: int, per_message: int = 1) -> TopUp:
    """The top-up for commands: publish whenever the window is not full. A command's batches
    are small, and waiting for the workers' low-water mark (half) would let them wait long.
    ``per_message``: item ids per message (``IMGMOD_IDS_PER_MESSAGE``)."""
    from worker.window import Refiller  # imports Celery: only commands that publish pay for it

    return Refiller(engine, app, window, low_water=1.0, per_message=per_message).top_up


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
    listing: Listing | None = None,
    reuse: store.ReuseScope | None = None,
    folder_filters: Filters | None = None,
) -> Enqueued:
    """Read ``inputs`` into ``job`` and top the window up as rows land (see
    :func:`enqueue_records`); rows without a referer of their own get ``referer`` or the
    job's. An OSS prefix is listed page by page (:func:`enqueue_prefix`, with ``listing``);
    a local folder is walked with ``folder_filters`` (``--include``/``--exclude``) when given."""
    summary = EnqueueSummary()
    defaults = Defaults(oss_region, referer or job.referer)
    for paged, group in groupby(inputs, key=lambda path: kind_of(path).paged):
        if not paged:
            records = _read_plain(list(group), defaults, stdin, folder_filters)
            enqueue_records(
                engine, job, records, top_up, on_batch=on_batch, summary=summary, reuse=reuse
            )
            continue
        if listing is None:
            raise ValueError("an OSS prefix needs a Listing (an OSS client and filters)")
        for path in group:
            enqueue_prefix(
                engine, job, path, top_up, listing, defaults, summary, on_batch, reuse=reuse
            )
    return Enqueued(summary, store.state_counts(engine, job.id)["pending"])


def _read_plain(
    paths: list[str], defaults: Defaults, stdin: IO[bytes] | None, folder_filters: Filters | None
) -> Iterable[Accepted | Rejected]:
    """The records of inputs that are not listed page by page; folders under
    ``folder_filters`` when given. Every path is checked before any is read."""

    def read(path: str) -> Iterable[Accepted | Rejected]:
        if folder_filters is not None and kind_of(path).name == "folder":
            return folder_records(path, defaults, folder_filters)
        return read_inputs(
            [path], oss_region=defaults.oss_region, referer=defaults.referer, stdin=stdin
        )

    if folder_filters is None:
        return read_inputs(
            paths, oss_region=defaults.oss_region, referer=defaults.referer, stdin=stdin
        )
    for path in paths:
        check_input(path, folder_filters)
    return chain.from_iterable(read(path) for path in paths)


@dataclass(frozen=True)
class Listing:
    """What listing an OSS prefix needs: a client for a region (``worker.oss.make_client``
    with the command's settings and credentials), the filters, and the region of rows."""

    client_for: Callable[[str], Any]
    region: str
    filters: Filters = Filters()
    page_size: int = MAX_KEYS


def enqueue_prefix(
    engine: Engine,
    job: store.Job,
    path: str,
    top_up: TopUp,
    listing: Listing,
    defaults: Defaults,
    summary: EnqueueSummary,
    on_batch: Callable[[EnqueueSummary], None] | None = None,
    *,
    reuse: store.ReuseScope | None = None,
) -> None:
    """List ``oss://bucket/prefix`` into the job one page at a time: record the page's rows,
    top the window up (workers start on the first page), then save the continuation point
    with the job. A listing killed midway and run again continues from the last page saved;
    that page's rows, if recorded again, are dropped by their key (no gap, no duplicate).
    Raises a :class:`worker.oss.OssError` naming the bucket when OSS refuses."""
    prefix = parse_prefix(path)
    fingerprint = listing.filters.fingerprint()
    state = store.open_listing(
        engine, job.id, f"{prefix} [{fingerprint}]" if fingerprint else str(prefix)
    )
    client = listing.client_for(listing.region)
    defaults = Defaults(defaults.oss_region or listing.region, defaults.referer)
    listed = state.listed

    def fetch(token: str | None) -> Page:
        return list_page(client, prefix.bucket, prefix.prefix, token, max_keys=listing.page_size)

    for page in prefetched(fetch, state.token):  # the next page is fetched while this one lands
        records, skipped = page_records(prefix, page.objects, listed + 1, listing.filters, defaults)
        summary.skipped += skipped
        enqueue_records(
            engine,
            job,
            records,
            top_up,
            batch_size=len(records) or 1,
            first_batch=len(records) or 1,  # a page is one batch: its position is saved after
            summary=summary,
            reuse=reuse,
        )
        listed += len(page.objects)
        store.save_listing(engine, state.id, page.next_token, listed)
        if on_batch is not None:
            on_batch(summary)
