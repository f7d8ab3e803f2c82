"""Rows put back in line: a job's lost work (``imgmod resume``, stall detection) and its
failed rows (``imgmod retry``). Neither publishes ids of its own: both put rows ``pending`` and
top the window up, like an enqueue (:mod:`worker.producer`), so the broker never holds more than
the window.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine

from worker import store
from worker.producer import TopUp


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
