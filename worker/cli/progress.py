"""Showing work under way: a live bar on a terminal, a plain line every 10 s otherwise.

:func:`render_follow` turns the events of :func:`worker.watch.follow_job` into what the user
reads, and into the command's exit code.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Protocol

import click

from worker import watch
from worker.cli.errors import EXIT_BUDGET, EXIT_INCOMPLETE, EXIT_OK

PLAIN_EVERY_SECONDS = 10.0  # a line per this long when stderr is no terminal (logs, cron mail)


class Update(Protocol):
    def __call__(self, text: str, completed: int | None = None, total: int | None = None) -> None:
        """Show ``text`` (and ``completed`` of ``total`` on a bar)."""


@contextmanager
def progress_bar(label: str) -> Iterator[Update]:
    """``update(text, completed=None, total=None)``: a live bar on a terminal (a spinner while
    the total is unknown), plain lines every 10 s otherwise (logs, cron mail)."""
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[text]}"),
            console=Console(stderr=True),
            transient=False,
        )
        with progress:
            task = progress.add_task(label, total=None, text="")

            def live(text: str, completed: int | None = None, total: int | None = None) -> None:
                progress.update(task, text=text, completed=completed, total=total)

            yield live
        return
    last = [0.0]

    def plain(text: str, completed: int | None = None, total: int | None = None) -> None:
        now = time.monotonic()
        if now - last[0] >= PLAIN_EVERY_SECONDS:
            last[0] = now
            click.echo(f"{label}: {text}", err=True)

    yield plain


def print_counts(name: str, counts: dict[str, int]) -> None:
    parts = ", ".join(f"{state} {counts[state]}" for state in sorted(counts) if counts[state])
    click.echo(f"job {name}: {parts or 'empty'}")


def _progress_text(seen: watch.Progress) -> str:
    eta = seen.eta_seconds
    return (
        f"done {seen.counts.get('done', 0)}, failed {seen.counts.get('failed', 0)}, "
        f"rejected {seen.counts.get('rejected', 0)}, open {seen.open_rows}, "
        f"{seen.rate:.1f}/s, ETA {'?' if eta is None else f'{eta:.0f}s'}"
    )


def _note(event: watch.Event) -> str | None:
    """The stderr line for an event other than progress (None: nothing to say)."""
    if isinstance(event, watch.StallFloorRaised):
        return (
            f"stall detection waits {event.floor:.0f}s, not {event.asked:.0f}s: "
            "a retry may legitimately pause that long (backoff cap plus one call)"
        )
    if isinstance(event, watch.DatabaseDown):
        return f"database unavailable ({event.error}); waiting"
    if isinstance(event, watch.DatabaseBack):
        return f"database back after {event.after_seconds:.0f}s"
    if isinstance(event, watch.StalledWithoutBroker):
        return f"no progress, and the broker is unavailable ({event.reason})"
    if isinstance(event, watch.Republished):
        return (
            f"no progress for {event.stalled_seconds:.0f}s with {event.open_rows} open rows: "
            f"re-enqueued {event.count} (broker lost its messages?)"
        )
    if isinstance(event, watch.TimedOut):
        if event.open_rows is None:
            return "timeout: the database is still unavailable"
        return f"timeout: {event.open_rows} references still open"
    return None


def render_follow(name: str, events: Iterable[watch.Event]) -> int:
    """Show a followed job's events; returns the exit code: 0 every reference done, 3 some
    failed or rejected, or still open at the timeout, 4 some paused on a budget."""
    finished: watch.Finished | None = None
    with progress_bar(f"job {name}") as update:
        for event in events:
            if isinstance(event, watch.Progress):
                update(_progress_text(event), event.closed, event.closed + event.open_rows)
            elif isinstance(event, watch.Finished):
                finished = event
            elif (line := _note(event)) is not None:
                click.echo(line, err=True)
    if finished is None:
        return EXIT_INCOMPLETE
    print_counts(name, finished.counts)
    if finished.counts.get("paused"):
        return EXIT_BUDGET
    return EXIT_OK if finished.all_done else EXIT_INCOMPLETE
