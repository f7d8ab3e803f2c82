"""The producer without services: references read from a file into a real SQLite store, topped up
through Celery's in-process ``memory://`` broker, every published message recorded.

What it must hold: the counts a user reads after ``imgmod enqueue`` (accepted, duplicate,
rejected) match the rows written; a second enqueue of the same input adds nothing; and each
top-up publishes exactly the rows it took, once each, so a row is never published twice and
never published without a row.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from celery import Celery
from celery.signals import before_task_publish

from worker import producer, store
from worker.app import make_app
from worker.queue import TASK_NAME
from worker.settings import Settings, load_settings
from worker.sources import read_inputs

LINES = [
    "# four images, one of them twice, and two lines the API would refuse",
    "https://example.com/a.png",
    "https://example.com/b.png",
    "ftp://example.com/c.png",
    "https://example.com/a.png",
    "",
    "https://example.com/d.png",
    "not a url",
    "https://example.com/e.png",
]
GOOD, DUPLICATE, BAD = 4, 1, 2


@pytest.fixture
def settings(sqlite_url: str) -> Settings:
    return load_settings({"IMGMOD_DATABASE_URL": sqlite_url, "IMGMOD_BROKER_URL": "memory://"})


@pytest.fixture
def engine(settings: Settings) -> Iterator[sa.Engine]:
    store.upgrade(settings.database_url)
    engine = store.make_engine(settings.database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def app(settings: Settings) -> Celery:
    return make_app(settings)


@pytest.fixture
def published() -> Iterator[list[int]]:
    """The item id of every message published, in order (Celery's own publish signal)."""
    ids: list[int] = []

    def record(sender: str | None = None, body: object = None, **_: object) -> None:
        if sender == TASK_NAME:
            args = body[0] if isinstance(body, tuple | list) else []  # protocol 2: (args, ...)
            ids.append(int(args[0]))

    before_task_publish.connect(record, weak=False, dispatch_uid="test_producer")
    yield ids
    before_task_publish.disconnect(dispatch_uid="test_producer")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "urls.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


def enqueue(
    engine: sa.Engine,
    settings: Settings,
    app: Celery,
    source: Path,
    batch_size: int = 3,
    first_batch: int = producer.FIRST_BATCH,
) -> tuple[producer.EnqueueSummary, list[int]]:
    """Enqueue ``source`` into job ``j``; returns the summary and how many messages each
    top-up published."""
    job = producer.open_job(engine, settings, "j")
    top_up = producer.eager_top_up(engine, app, settings.queue_window)
    per_call: list[int] = []

    def counted() -> int:
        n = top_up()
        per_call.append(n)
        return n

    records = read_inputs([str(source)])
    summary = producer.enqueue_records(
        engine, job, records, counted, batch_size=batch_size, first_batch=first_batch
    )
    return summary, per_call


def item_states(engine: sa.Engine) -> dict[int, str]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, state FROM items"))
        return {item_id: state for item_id, state in rows}


def test_enqueue_counts_accepted_duplicate_and_rejected_lines_as_the_rows_written(
    engine: sa.Engine, settings: Settings, app: Celery, source: Path, published: list[int]
) -> None:
    summary, _ = enqueue(engine, settings, app, source)

    assert (summary.accepted, summary.duplicates, summary.rejected) == (GOOD, DUPLICATE, BAD)
    assert summary.lines == GOOD + DUPLICATE + BAD  # the comment and the blank line are skipped
    assert summary.published == GOOD
    job = store.get_job(engine, "j")
    assert job is not None
    assert (job.total_lines, job.accepted, job.duplicates) == (GOOD + DUPLICATE + BAD, GOOD, 1)
    counts = {k: v for k, v in store.state_counts(engine, job.id).items() if v}
    assert counts == {"queued": GOOD, "rejected": BAD}
    assert [s.split(": ", 1)[0] for s in summary.rejected_samples] == [f"{source}:4", f"{source}:8"]


def test_the_same_input_enqueued_again_adds_no_row_and_publishes_nothing(
    engine: sa.Engine, settings: Settings, app: Celery, source: Path, published: list[int]
) -> None:
    enqueue(engine, settings, app, source)
    rows_before, messages_before = item_states(engine), list(published)

    again, _ = enqueue(engine, settings, app, source)

    assert (again.accepted, again.duplicates, again.published) == (0, GOOD + DUPLICATE, 0)
    assert item_states(engine) == rows_before
    assert published == messages_before


def test_each_top_up_publishes_the_rows_it_took_once_each(
    engine: sa.Engine, settings: Settings, app: Celery, source: Path, published: list[int]
) -> None:
    summary, per_call = enqueue(engine, settings, app, source, batch_size=2)

    assert len(per_call) == 4  # one top-up per batch of two lines: 7 lines, 4 batches
    assert sum(per_call) == summary.published == len(published) == GOOD
    assert len(set(published)) == len(published)  # no row published twice
    states = item_states(engine)
    assert sorted(published) == sorted(i for i, s in states.items() if s == "queued")
    assert not any(states[i] == "rejected" for i in published)  # never a rejected line


def test_the_first_top_up_comes_after_a_smaller_first_batch(
    engine: sa.Engine, settings: Settings, app: Celery, source: Path, published: list[int]
) -> None:
    summary, per_call = enqueue(engine, settings, app, source, batch_size=5, first_batch=1)

    assert per_call[0] == 1  # the first image is published before the next lines are inserted
    assert len(per_call) == 3  # 7 lines: 1, then batches of 2 and 4 (each twice the last)
    assert sum(per_call) == summary.published == GOOD


def test_the_first_batch_is_published_before_the_reading_ahead_starts(
    engine: sa.Engine, settings: Settings, app: Celery, source: Path, published: list[int]
) -> None:
    """The reading-ahead thread would hold the GIL half the time while the workers' first
    messages are made: it starts only once they are out."""
    job = producer.open_job(engine, settings, "j")
    top_up = producer.eager_top_up(engine, app, settings.queue_window)
    reading_ahead: list[bool] = []

    def watched() -> int:
        names = {t.name for t in threading.enumerate()}
        reading_ahead.append("enqueue-read-ahead" in names)
        return top_up()

    records = read_inputs([str(source)])
    producer.enqueue_records(engine, job, records, watched, batch_size=5, first_batch=1)

    assert reading_ahead[0] is False
    # At the second, the thread holds the last batch ready (it ends only when that is taken).
    assert reading_ahead[1] is True
    assert len(published) == GOOD


def test_a_copy_line_escapes_what_copy_text_would_misread() -> None:
    from datetime import datetime, timezone

    from worker.store.inserts import copy_line

    moment = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc)
    line = copy_line(["a\tb\\c\nd\re", None, 7, moment, ""])
    assert line == "a\\tb\\\\c\\nd\\re\t\\N\t7\t2026-01-02T03:04:05.000006+00:00\t\n"
