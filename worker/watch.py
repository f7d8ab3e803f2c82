"""Following a job to its end: progress, database outages, stalls, timeouts.

:func:`follow_job` polls the job's counts and yields what happened as events; whoever follows
(``imgmod run``/``wait``) only renders them. While it follows it also does two jobs of the
pipeline's own:

* it tops up the broker's publishing window every second, as every worker does
  (:class:`worker.window.RefillLoop`), so a job flows even while no worker is up to refill,
  and with it settles the waiters (:func:`worker.store.settle_waiters`): copies of an image
  whose original has been answered are done, those of one that failed are released;
* it repairs a stall: when no row closed and no attempt started for ``stall_seconds``, the open
  rows are put back in line (:func:`worker.requeue.requeue_open`): the broker lost their
  messages (a Redis restart without persistence, a refiller killed between take and publish).

A database outage is waited out, never counted as a stall: the workers wait for it too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.exc import InterfaceError, OperationalError

from worker import store
from worker.producer import eager_top_up
from worker.requeue import requeue_open

if TYPE_CHECKING:
    from celery import Celery
    from sqlalchemy.engine import Engine

    from worker.settings import Settings

# The database is away (restarting, failing over, network): workers wait it out, so do we.
DATABASE_DOWN = (OperationalError, InterfaceError)
POLL_SECONDS = 0.5
OUTAGE_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class StallFloorRaised:
    """``stall_seconds`` was below :func:`stall_floor`; stall detection waits ``floor``."""

    asked: float
    floor: float


@dataclass(frozen=True)
class Progress:
    """The job's counts at one poll, with the closing rate since following began."""

    counts: dict[str, int]
    open_rows: int
    closed: int
    rate: float  # rows closed per second since following began

    @property
    def eta_seconds(self) -> float | None:
        return self.open_rows / self.rate if self.rate > 0 else None


@dataclass(frozen=True)
class DatabaseDown:
    """The database stopped answering; following waits for it. ``error`` names the driver's
    exception class (never its text, which may carry the URL)."""

    error: str


@dataclass(frozen=True)
class DatabaseBack:
    after_seconds: float


@dataclass(frozen=True)
class Republished:
    """A stall: nothing closed and no attempt started for ``stalled_seconds`` with
    ``open_rows`` open; ``count`` rows were put back in line."""

    stalled_seconds: float
    open_rows: int
    count: int


@dataclass(frozen=True)
class StalledWithoutBroker:
    """A stall that could not be repaired: the broker does not answer either."""

    reason: str


@dataclass(frozen=True)
class TimedOut:
    """``timeout`` passed: ``open_rows`` still open, None when the database is still away."""

    open_rows: int | None


@dataclass(frozen=True)
class Finished:
    """Every row is closed (done, failed or rejected)."""

    counts: dict[str, int]

    @property
    def all_done(self) -> bool:
        """No row failed or was rejected."""
        return not (self.counts.get("failed", 0) + self.counts.get("rejected", 0))


Event = (
    StallFloorRaised
    | Progress
    | DatabaseDown
    | DatabaseBack
    | Republished
    | StalledWithoutBroker
    | TimedOut
    | Finished
)


def stall_floor(settings: Settings) -> float:
    """The longest a job with nothing lost may show no new attempt: one retry countdown (at
    most the backoff cap) plus one call. Stall detection waiting less would republish rows
    whose retry is only waiting its turn, and defeat the backoff."""
    return settings.backoff_cap + settings.connect_timeout + settings.read_timeout + 1.0


def closed_rows(counts: dict[str, int]) -> int:
    return sum(n for state, n in counts.items() if state not in store.OPEN_STATES)


def progress(counts: dict[str, int], first_closed: int, elapsed: float) -> Progress:
    """Pure: the :class:`Progress` for ``counts``, given how many rows were closed when
    following began and how long ago that was."""
    closed = closed_rows(counts)
    open_rows = sum(counts.values()) - closed
    return Progress(counts, open_rows, closed, (closed - first_closed) / max(elapsed, 1e-6))


def follow_job(
    engine: Engine,
    app: Celery,
    settings: Settings,
    job: store.Job,
    stall_seconds: float,
    timeout: float | None = None,
) -> Iterator[Event]:
    """Poll ``job`` until every row is closed or ``timeout`` passes; yields what happens.

    The last event is :class:`Finished` (the job is marked finished) or :class:`TimedOut`.
    Stalled means: no row closed and no attempt started for ``stall_seconds`` (raised to the
    longest legitimate pause, see :func:`stall_floor`). Retries waiting out their backoff
    start attempts, so they never count as a stall; a broker that lost its messages does.
    """
    from worker.queue import BrokerUnavailable
    from worker.window import Refiller, RefillLoop

    per_message = settings.batch.ids_per_message
    refills = RefillLoop(Refiller(engine, app, settings.queue_window, per_message=per_message))
    republish = eager_top_up(engine, app, settings.queue_window, settings.batch.ids_per_message)
    floor = stall_floor(settings)
    if stall_seconds < floor:
        yield StallFloorRaised(stall_seconds, floor)
        stall_seconds = floor
    started = time.monotonic()
    last_closed, last_change = -1, time.monotonic()
    last_attempts = store.attempts_made(engine, job.id)
    first_closed: int | None = None
    outage_since: float | None = None
    while True:
        try:
            counts = store.state_counts(engine, job.id)
        except DATABASE_DOWN as exc:
            if outage_since is None:
                outage_since = time.monotonic()
                yield DatabaseDown(type(exc.orig).__name__)
            if timeout is not None and time.monotonic() - started > timeout:
                yield TimedOut(None)
                return
            last_change = time.monotonic()  # an outage is not a stall
            time.sleep(OUTAGE_POLL_SECONDS)
            continue
        if outage_since is not None:
            yield DatabaseBack(time.monotonic() - outage_since)
            outage_since = None
        now = time.monotonic()
        if first_closed is None:
            first_closed = closed_rows(counts)
        seen = progress(counts, first_closed, now - started)
        if seen.closed != last_closed:
            last_closed, last_change = seen.closed, now
        yield seen
        if seen.open_rows == 0:
            break
        if now - last_change >= stall_seconds:
            try:
                attempts = store.attempts_made(engine, job.id)
            except DATABASE_DOWN:
                continue  # the next poll reports the outage
            if attempts != last_attempts:  # retries under way: slow, not stalled
                last_attempts = attempts
            else:
                try:
                    count = requeue_open(engine, job, republish)
                except BrokerUnavailable as exc:
                    yield StalledWithoutBroker(str(exc))
                else:
                    yield Republished(stall_seconds, seen.open_rows, count)
            last_change = now
        if timeout is not None and now - started > timeout:
            yield TimedOut(seen.open_rows)
            return
        refills.tick()
        time.sleep(POLL_SECONDS)
    store.finish_job_if_complete(engine, job.id)
    yield Finished(counts)
