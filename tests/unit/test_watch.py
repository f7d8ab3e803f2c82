"""Following a job: the pure figures of worker.watch, and how the command line renders its
events (the lines operators and the fault tests read)."""

from __future__ import annotations

import pytest

from worker import watch
from worker.cli.errors import EXIT_INCOMPLETE, EXIT_OK
from worker.cli.progress import render_follow
from worker.settings import load_settings


def test_progress_counts_open_and_closed_rows_and_the_rate_since_following_began() -> None:
    counts = {"pending": 3, "queued": 2, "running": 1, "done": 10, "failed": 2, "rejected": 1}
    seen = watch.progress(counts, first_closed=3, elapsed=2.0)
    assert (seen.open_rows, seen.closed) == (6, 13)
    assert seen.rate == pytest.approx(5.0) and seen.eta_seconds == pytest.approx(1.2)


def test_no_progress_yet_has_no_eta() -> None:
    assert watch.progress({"queued": 4}, first_closed=0, elapsed=5.0).eta_seconds is None


def test_the_stall_floor_is_the_backoff_cap_plus_one_whole_call() -> None:
    settings = load_settings(
        {"IMGMOD_BACKOFF_CAP": "4", "IMGMOD_CONNECT_TIMEOUT": "1", "IMGMOD_READ_TIMEOUT": "3"}
    )
    assert watch.stall_floor(settings) == 9.0


def test_a_job_with_a_failed_or_rejected_row_is_finished_but_not_all_done() -> None:
    assert watch.Finished({"done": 3}).all_done
    assert not watch.Finished({"done": 3, "failed": 1}).all_done
    assert not watch.Finished({"done": 3, "rejected": 1}).all_done


def test_a_job_that_finished_clean_exits_0_with_its_counts_on_stdout(capsys) -> None:
    events = [watch.Progress({"done": 5}, 0, 5, 1.0), watch.Finished({"done": 5, "failed": 0})]
    assert render_follow("nightly", events) == EXIT_OK
    assert capsys.readouterr().out == "job nightly: done 5\n"


def test_failures_and_timeouts_exit_3(capsys) -> None:
    assert render_follow("j", [watch.Finished({"done": 1, "failed": 2})]) == EXIT_INCOMPLETE
    assert capsys.readouterr().out == "job j: done 1, failed 2\n"
    assert render_follow("j", [watch.TimedOut(4)]) == EXIT_INCOMPLETE
    assert "timeout: 4 references still open" in capsys.readouterr().err
    assert render_follow("j", [watch.TimedOut(None)]) == EXIT_INCOMPLETE
    assert "timeout: the database is still unavailable" in capsys.readouterr().err


def test_stalls_outages_and_a_raised_floor_are_each_one_stderr_line(capsys) -> None:
    events: list[watch.Event] = [
        watch.StallFloorRaised(asked=1.0, floor=9.0),
        watch.DatabaseDown("OperationalError"),
        watch.DatabaseBack(12.4),
        watch.Republished(stalled_seconds=10.0, open_rows=8, count=7),
        watch.StalledWithoutBroker("connection refused"),
        watch.Finished({"done": 8}),
    ]
    render_follow("j", events)
    assert capsys.readouterr().err.splitlines() == [
        "stall detection waits 9s, not 1s: a retry may legitimately pause that long "
        "(backoff cap plus one call)",
        "database unavailable (OperationalError); waiting",
        "database back after 12s",
        "no progress for 10s with 8 open rows: re-enqueued 7 (broker lost its messages?)",
        "no progress, and the broker is unavailable (connection refused)",
    ]
