"""The publishing window: how many rows wait in the broker, and who keeps it topped up.

A Celery message costs ~1 KB of Redis memory, so publishing a 10-million-image backfill at once
would need ~10 GB of Redis. Instead a job's rows wait in SQL as ``pending`` and at most
``IMGMOD_QUEUE_WINDOW`` rows (20,000 by default: ~20 MB at one id per message, an
``IMGMOD_IDS_PER_MESSAGE``-th of it at more) sit in the broker, whatever the job's size.
When the backlog falls below half the window it is filled up again from the oldest
job's ``pending`` rows; at the default and 100 QPS the half left is still 100 s of work, so a
refill every second never lets the workers starve (``bench/broker_memory.py``).

Who refills: every caller of :meth:`Refiller.top_up`, taking turns under a Redis lock so the
window holds however many run at once:

* ``imgmod enqueue`` after each batch it records (the first results arrive while it reads);
* one worker process of the fleet, from a thread started on Celery's ``worker_ready`` signal
  in each, every second (:func:`connect_worker_signals`): a job keeps flowing after its
  producer has exited. The process is the holder of the window's :class:`~worker.duty.Duty`;
  the others only ask Redis each second whether it is free (its holder stopped), so the work
  is done once for the fleet, not once per process. Each tick first settles the waiters
  (:func:`worker.store.settle_waiters`), so a released one is taken in the same tick;
* ``imgmod run``/``wait`` while following a job, ``imgmod resume``, and ``imgmod retry``: the
  failed rows go back to ``pending`` and only what fits is published (:mod:`worker.producer`).

The order is take, then publish: one atomic ``UPDATE`` turns the rows ``queued``
(:func:`worker.store.take_pending`; two refillers never get the same row), then their messages
are pushed. A publish that fails puts its rows back to ``pending`` at once. A refiller killed
between the two leaves ``queued`` rows without a message, as does a worker killed while kombu
hands it a message: a live worker's :class:`~worker.orphans.OrphanFinder` publishes such rows
again once their message has been nowhere for ``ORPHAN_GRACE_S`` (after a broker lost
everything, stall detection in ``imgmod run``/``wait`` or ``imgmod resume`` reopens the rows
sooner). The other order (publish, then mark) would have to hold the rows locked across the
network call: on SQLite, the whole database's write lock, stopping every worker's claim
meanwhile.

Brokers other than Redis (the demo's embedded SQLAlchemy transport) can't report their backlog
cheaply: for them there is no window, and a top-up publishes every ``pending`` row.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from worker import queue, store
from worker.duty import Duty, held
from worker.orphans import LOOK_HOLD_S, OrphanFinder

if TYPE_CHECKING:
    from celery import Celery
    from sqlalchemy.engine import Engine

    from worker.settings import Settings

log = logging.getLogger(__name__)

TAKE_BATCH = 5000  # rows per take statement (one short write transaction) and publish
LOCK_SECONDS = 60.0  # a refill of 20,000 takes ~1 s; a dead refiller blocks others this long
INTERVAL = 1.0  # seconds between a worker's looks at the backlog
RETRY_AFTER = 10.0  # seconds before trying again after a failure (broker or database away)
WINDOW_HOLD_S = 3.0  # the refill duty passes on this long after its holder's last tick


def refill_amount(backlog: int, window: int, low_water: float = 0.5) -> int:
    """Messages to publish when the broker holds ``backlog`` of a ``window``: none while at
    least ``low_water`` of the window is still there (so a worker's refills come in large,
    cheap batches), else as many as fill it."""
    if backlog >= window * low_water:
        return 0
    return window - backlog


@dataclass
class Refiller:
    """Publishes ``pending`` rows, oldest job first, ``per_message`` ids to a message, keeping
    the broker's backlog within ``window`` rows.

    The window counts rows, not messages: the broker reports messages, each counted as a full
    ``per_message`` ids (a job's last message, a retried or swept id may carry fewer), so the
    rows in the broker never exceed the window and its messages are a ``per_message``-th of it.
    """

    engine: Engine
    app: Celery
    window: int
    low_water: float = 0.5  # refill below this share of the window (1.0: whenever not full)
    per_message: int = 1  # item ids per message (IMGMOD_IDS_PER_MESSAGE)

    def top_up(self) -> int:
        """Fill the window if below its low-water mark; returns how many were published.

        Raises :class:`worker.queue.BrokerUnavailable` when the broker doesn't answer, and the
        database's errors when it is away; rows taken but not published are ``pending`` again.
        """
        backlog = self._backlog_rows()
        if backlog is None:
            return self._publish(None)
        if not refill_amount(backlog, self.window, self.low_water):
            return 0
        if not store.jobs_with_pending(self.engine):
            return 0  # nothing to publish (a job's tail, an idle night): no lock taken for it
        with queue.refill_lock(self.app, LOCK_SECONDS) as ours:
            if not ours:
                return 0  # another refiller is at it
            backlog = self._backlog_rows() or 0  # it may have just finished
            return self._publish(refill_amount(backlog, self.window, self.low_water))

    def _backlog_rows(self) -> int | None:
        """The rows the broker holds at most: its messages, each counted full."""
        messages = queue.broker_backlog(self.app)
        return None if messages is None else messages * self.per_message

    def _publish(self, wanted: int | None) -> int:
        """Take and publish up to ``wanted`` rows (None: all of them), a batch at a time."""
        published = 0
        for job_id in store.jobs_with_pending(self.engine):
            while wanted is None or published < wanted:
                size = TAKE_BATCH if wanted is None else min(TAKE_BATCH, wanted - published)
                ids = store.take_pending(self.engine, job_id, size)
                if not ids:
                    break
                for start in range(0, len(ids), queue.PUBLISH_BATCH):
                    try:
                        queue.publish_ids(
                            self.app,
                            ids[start : start + queue.PUBLISH_BATCH],
                            per_message=self.per_message,
                        )
                    except BaseException:
                        self._give_back(ids[start:])
                        raise
                published += len(ids)
        return published

    def _give_back(self, ids: list[int]) -> None:
        """Rows whose publish failed go back to ``pending``; if even that fails they stay
        ``queued`` without a message, for stall detection or ``imgmod resume``."""
        try:
            store.return_to_pending(self.engine, ids)
        except Exception as exc:  # noqa: BLE001 - the publish error is the one to report
            log.warning(
                "publishing window: %d rows stay queued without a message (%s); "
                "`imgmod resume JOB` republishes them",
                len(ids),
                type(exc).__name__,
            )


@dataclass
class RefillLoop:
    """Calls :meth:`Refiller.top_up` at most every ``interval`` seconds and never raises: a
    failure is logged once (one line, no traceback) and tried again after ``retry_after``."""

    refiller: Refiller
    interval: float = INTERVAL
    retry_after: float = RETRY_AFTER
    duty: Duty | None = None  # a worker's: one process of the fleet refills (worker.duty)
    _due: float = field(default=0.0, init=False)
    _failing: bool = field(default=False, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    def tick(self) -> int:
        """Top up if due; returns how many messages were published."""
        now = time.monotonic()
        if now < self._due:
            return 0
        try:
            if not held(self.duty, self.refiller.app):
                self._due = time.monotonic() + self.interval
                return 0
            store.settle_waiters(self.refiller.engine)  # released waiters are taken right away
            published = self.refiller.top_up()
        except Exception as exc:  # noqa: BLE001 - a refill must never kill its host loop
            self._due = time.monotonic() + self.retry_after
            if not self._failing:
                self._failing = True
                log.warning(
                    "publishing window: cannot refill (%s: %s); pending rows wait, trying again "
                    "every %.0fs",
                    type(exc).__name__,
                    _first_line(exc),
                    self.retry_after,
                )
            return 0
        if self._failing:
            self._failing = False
            log.warning("publishing window: refilling again")
        self._due = time.monotonic() + self.interval
        return published

    def start(self) -> None:
        """Tick from a daemon thread until :meth:`stop`."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="imgmod-window", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(max(0.05, self._due - time.monotonic()))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


_worker_loop: RefillLoop | None = None
_worker_finder: OrphanFinder | None = None


def worker_orphan_finder() -> OrphanFinder | None:
    """This worker process's :class:`OrphanFinder`, from ready to shutdown; None elsewhere."""
    return _worker_finder


def connect_worker_signals(app: Celery, settings: Settings) -> None:
    """Run a :class:`RefillLoop` in each worker process, and offer its lease keeper an
    :class:`OrphanFinder`, from ready to shutdown (call once, from the app module; the signals
    never fire in the CLI)."""
    from celery.signals import worker_ready, worker_shutdown

    def on_ready(**_: Any) -> None:
        global _worker_loop, _worker_finder
        if _worker_loop is None:
            engine = store.make_engine(settings.database_url)
            per_message = settings.batch.ids_per_message
            refiller = Refiller(engine, app, settings.queue_window, per_message=per_message)
            _worker_loop = RefillLoop(refiller, duty=Duty("window", WINDOW_HOLD_S))
            _worker_finder = OrphanFinder(engine, app, duty=Duty("orphans", LOOK_HOLD_S))
            _worker_loop.start()

    def on_shutdown(**_: Any) -> None:
        global _worker_loop, _worker_finder
        _worker_finder = None
        if _worker_loop is not None:
            _worker_loop.stop()
            _worker_loop.refiller.engine.dispose()
            _worker_loop = None

    for signal, handler in ((worker_ready, on_ready), (worker_shutdown, on_shutdown)):
        signal.disconnect(dispatch_uid="imgmod.window")  # the last configuration wins
        signal.connect(handler, weak=False, dispatch_uid="imgmod.window")
