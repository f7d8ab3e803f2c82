"""A dry run: what ``imgmod run`` would read, bill, cost and take, with nothing written,
published or called.

Every input is read, listed and validated by the same code a real enqueue runs (the producer's
readers, :func:`worker.sources.oss_prefix.page_records` for OSS pages, :func:`worker.new_rows.
to_new_item` and :func:`~worker.new_rows.with_keys` for each row's key and identity), and the
database is only *read* (:mod:`worker.store.estimates`): references the job already holds are
duplicates, images with a stored answer in the job's reuse scope are reusable. What is left is
the calls that would be billed, priced with the user's own prices (:mod:`worker.prices`) and
timed at the configured QPS cap from the calls of every service. A job of several services is
counted as :func:`worker.producer.enqueue_records` inserts it, once per service: references
once, and reuse, waiting and calls per service (an image one service answered before saves
that service's call only). OSS listing calls (``ListObjectsV2``) are made: they are
reads, and the only way to know what a prefix holds; no moderation call is.

Memory: references (and, per service, images) are kept as 8-byte digests, so a dry run over
millions of lines holds a few tens of MB, never the rows.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from itertools import groupby
from typing import IO, Any

from sqlalchemy.engine import Engine

from worker import new_rows, producer
from worker.limits import QPS_MARGIN
from worker.oss import Page, list_page
from worker.prices import HOW_TO_PRICE, Prices
from worker.sources import Accepted, Rejected
from worker.sources.kinds import kind_of
from worker.sources.oss_prefix import Filters, page_records, parse_prefix, prefetched
from worker.sources.records import Defaults
from worker.store.estimates import in_flight_keys, known_ref_keys, reusable_keys
from worker.store.reuse import ReuseScope

BATCH = 2000


@dataclass
class Estimate:
    """What a run would do. References are counted once; ``calls``, reuse and copies per
    service; ``cost`` (in all) None without prices or with a service unpriced."""

    job: str
    services: tuple[str, ...]
    lines: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # "field: reason" -> lines
    duplicates: int = 0  # in the input twice, or already in the job
    # Per service, as the insert links each service's rows to answers of that service only:
    # a stored answer would be taken (no call) ...
    reusable_by_service: Counter[str] = field(default_factory=Counter)
    # ... or the same image earlier in this input, or open in a job now, is being called for:
    # the row waits for that answer (no call).
    copies_by_service: Counter[str] = field(default_factory=Counter)
    calls: dict[str, int] = field(default_factory=dict)
    cost: Decimal | None = None
    cost_by_service: dict[str, Decimal | None] = field(default_factory=dict)
    currency: str = ""
    seconds: float = 0.0
    qps: float = 0.0
    skipped: int = 0  # listed objects the filters pass over
    max_calls: int | None = None  # the job's cap (--max-calls): the rest would wait, paused

    @property
    def billed(self) -> int:
        return sum(self.calls.values())

    @property
    def reusable(self) -> int:
        """(reference, service) rows that would take a stored answer: what the enqueue's
        ``reused`` would say (one per reference for a job of one service)."""
        return sum(self.reusable_by_service.values())

    @property
    def copies(self) -> int:
        """(reference, service) rows that would wait for another row's answer."""
        return sum(self.copies_by_service.values())

    def as_dict(self) -> dict[str, Any]:
        """For ``--json``: plain values, the cost as a string (exact)."""
        return {
            "job": self.job,
            "services": list(self.services),
            "lines": self.lines,
            "accepted": self.accepted,
            "rejected": sum(self.rejected.values()),
            "rejected_by_reason": dict(self.rejected.most_common()),
            "duplicates": self.duplicates,
            "reusable": self.reusable,
            "reusable_by_service": {s: self.reusable_by_service[s] for s in self.services},
            "copies": self.copies,
            "copies_by_service": {s: self.copies_by_service[s] for s in self.services},
            "skipped": self.skipped,
            "calls": self.calls,
            "billed_calls": self.billed,
            "estimated_cost": None if self.cost is None else str(self.cost),
            "estimated_cost_by_service": {
                s: None if c is None else str(c) for s, c in self.cost_by_service.items()
            },
            "currency": self.currency or None,
            "estimated_seconds": round(self.seconds, 1),
            "qps": self.qps,
            "max_calls": self.max_calls,
            "would_pause": self.would_pause,
        }

    @property
    def would_pause(self) -> int:
        """Calls past the job's cap: their rows would wait as ``paused``."""
        return 0 if self.max_calls is None else max(0, self.billed - self.max_calls)

    def lines_for_people(self) -> list[str]:
        out = [
            f"dry run for job {self.job}: nothing written, published or called",
            f"references read: {self.lines:,}",
            f"accepted: {self.accepted:,}",
            f"rejected: {sum(self.rejected.values()):,}",
        ]
        out += [f"  {n:,} {reason}" for reason, n in self.rejected.most_common(10)]
        out.append(f"duplicates: {self.duplicates:,}")
        for service in self.services:
            of = f" ({service})" if len(self.services) > 1 else ""
            out += [
                f"already moderated, reusable{of}: {self.reusable_by_service[service]:,} "
                "(no call; --rescan to call anyway)",
                f"copies of an image earlier in the input or in flight{of}: "
                f"{self.copies_by_service[service]:,} (answered once)",
            ]
        if self.skipped:
            out.append(f"listed objects skipped by the filters: {self.skipped:,}")
        for service, n in self.calls.items():
            out.append(f"calls that would be billed ({service}): {n:,}")
        if len(self.calls) > 1:
            out.append(f"calls that would be billed in all: {self.billed:,}")
        if self.max_calls is not None:
            out.append(
                f"with --max-calls {self.max_calls:,}: {min(self.billed, self.max_calls):,} "
                f"billed, {self.would_pause:,} would wait as paused"
            )
        out.append(f"estimated duration: {_duration(self.seconds)} at {self.qps:g} calls/s")
        show = Prices(currency=self.currency).show
        if len(self.cost_by_service) > 1:
            for service, cost in self.cost_by_service.items():
                shown = "unknown (no price for it)" if cost is None else show(cost)
                out.append(f"estimated cost ({service}): {shown}")
        if self.cost is None:
            out.append(f"estimated cost: unknown; {HOW_TO_PRICE}")
        else:
            out.append(
                f"estimated cost{' in all' if len(self.calls) > 1 else ''}: {show(self.cost)}"
            )
        return out


def _duration(seconds: float) -> str:
    """``1 h 23 min``, ``4 min 10 s``, ``12 s``."""
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60} min"
    if s >= 60:
        return f"{s // 60} min {s % 60} s"
    return f"{s} s"


def estimate(
    estimate: Estimate,
    batches: Iterable[Sequence[Accepted | Rejected]],
    engine: Engine | None,
    job_id: int | None,
    scope: ReuseScope | None,
) -> Estimate:
    """Count ``batches`` of records into ``estimate`` (pure but for the reads through
    ``engine``: None for a database that does not exist yet, so nothing is known).

    References are counted once whatever the services; reuse and waiting are counted per
    service of ``estimate.services``, with ``scope`` (None: no linking at all) taken for each
    service in turn, as :func:`worker.producer.enqueue_records` inserts a batch once per
    service. ``scope.stored`` off (``--rescan``): no stored answer, but copies still wait."""
    seen: set[bytes] = set()
    # Per service: identities and content keys of the rows that would be called.
    images: dict[str, set[bytes]] = {service: set() for service in estimate.services}
    for batch in batches:
        estimate.lines += len(batch)
        fresh = []
        for record in batch:
            if isinstance(record, Rejected):
                estimate.rejected[f"{record.field}: {record.reason}"] += 1
                continue
            item = new_rows.with_keys(new_rows.to_new_item(record))
            digest = hashlib.blake2b(item.ref_key.encode(), digest_size=8).digest()
            if digest in seen:
                estimate.duplicates += 1
                continue
            seen.add(digest)
            fresh.append(item)
        if engine is not None and job_id is not None and fresh:
            known = known_ref_keys(engine, job_id, [i.ref_key for i in fresh])
            estimate.duplicates += sum(1 for i in fresh if i.ref_key in known)
            fresh = [i for i in fresh if i.ref_key not in known]
        estimate.accepted += len(fresh)
        if scope is not None and fresh:
            for service in estimate.services:
                mine = replace(scope, service=service)
                _count_reuse(estimate, fresh, engine, mine, images[service])
    return estimate


def _count_reuse(
    estimate: Estimate,
    fresh: list[Any],
    engine: Engine | None,
    scope: ReuseScope,
    images: set[bytes],
) -> None:
    """As the insert would link the rows of ``scope.service`` (:mod:`worker.store.reuse`): a
    row whose image has a stored answer of that service reuses it (unless ``--rescan``); else
    a row whose image an earlier row of the input, or an open row of any job, is being called
    for (same identity or content key, same service) waits for that one's answer; else it is
    called."""
    eligible = [i for i in fresh if scope.urls or i.kind != "url"]
    stored: set[str] = set()
    flying: set[str] = set()
    if engine is not None and eligible:
        for column in ("identity", "content_key"):
            values = {getattr(i, column) for i in eligible if getattr(i, column)}
            if scope.stored:
                stored |= {f"{column}\0{v}" for v in reusable_keys(engine, column, values, scope)}
            flying |= {f"{column}\0{v}" for v in in_flight_keys(engine, column, values, scope)}
    service = scope.service
    for item in eligible:
        mine = {
            f"{n}\0{k}"
            for n, k in (("identity", item.identity), ("content_key", item.content_key))
            if k
        }
        if mine & stored:
            estimate.reusable_by_service[service] += 1
            continue
        keys = {hashlib.blake2b(k.encode(), digest_size=8).digest() for k in mine}
        if keys & images or mine & flying:
            estimate.copies_by_service[service] += 1  # a waiter: never a row others wait for
        else:
            images.update(keys)


def price(estimate: Estimate, prices: Prices, qps: float) -> Estimate:
    """The calls (per service), their cost (per service and in all) and the time they take at
    ``qps`` (the limiter's pace: the configured cap less its margin), from the total calls."""
    estimate.calls = {
        service: estimate.accepted
        - estimate.reusable_by_service[service]
        - estimate.copies_by_service[service]
        for service in estimate.services
    }
    if prices:
        estimate.cost_by_service = {s: prices.cost(s, n) for s, n in estimate.calls.items()}
        estimate.cost = prices.total(estimate.calls)
    else:
        estimate.cost_by_service, estimate.cost = {}, None
    estimate.currency = prices.currency
    estimate.qps = qps
    calls = (
        estimate.billed if estimate.max_calls is None else min(estimate.billed, estimate.max_calls)
    )
    estimate.seconds = calls / (qps * QPS_MARGIN) if qps > 0 else 0.0
    return estimate


def records_of(
    inputs: Sequence[str],
    defaults: Defaults,
    stdin: IO[bytes] | None,
    folder_filters: Filters | None,
    listing: producer.Listing | None,
    on_skipped: Callable[[int], None],
) -> Iterator[list[Accepted | Rejected]]:
    """The inputs' records in batches, as :func:`worker.producer.enqueue_inputs` reads them:
    plain inputs through the producer's readers, OSS prefixes page by page (not saved)."""
    for paged, group in groupby(inputs, key=lambda path: kind_of(path).paged):
        if not paged:
            yield from new_rows.batched(
                producer._read_plain(list(group), defaults, stdin, folder_filters), BATCH
            )
            continue
        if listing is None:
            raise ValueError("an OSS prefix needs a Listing (an OSS client and filters)")
        client = listing.client_for(listing.region)
        region_defaults = Defaults(defaults.oss_region or listing.region, defaults.referer)
        for path in group:
            prefix = parse_prefix(path)
            listed = 0

            def fetch(token: str | None, prefix: Any = prefix, client: Any = client) -> Page:
                return list_page(
                    client, prefix.bucket, prefix.prefix, token, max_keys=listing.page_size
                )

            for page in prefetched(fetch, None):
                records, skipped = page_records(
                    prefix, page.objects, listed + 1, listing.filters, region_defaults
                )
                on_skipped(skipped)
                listed += len(page.objects)
                yield list(records)
