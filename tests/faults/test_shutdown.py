"""SIGTERM to a worker mid-job: Celery's warm shutdown lets the calls in flight finish, hands the
rest (retries waiting for their countdown included) back to the broker, and a second worker
completes the job without paying for anything twice."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support import wait_until

pytestmark = [pytest.mark.service, pytest.mark.slow]

IMAGES = 300


def test_sigterm_finishes_in_flight_calls_and_a_second_worker_completes_the_job(
    stack: Any,
) -> None:
    # One call in five answers Code 500 (not billed): retries with a countdown are always
    # waiting in the worker when the signal arrives.
    stack.emulator.configure(fault_500=0.2)
    src, _ = stack.write_urls("term.txt", IMAGES)
    first = stack.start_worker(concurrency=32)
    stack.imgmod("enqueue", str(src), "--job", "term", check=True)

    def busy() -> bool:
        counts = stack.counts("term")
        return counts["done"] >= 40 and counts["running"] >= 10

    wait_until(busy, 90, "the worker to be busy mid-job")
    assert stack.counts("term")["done"] < IMAGES - 60, "the job ran too fast to stop it mid-way"

    started = time.monotonic()
    code = first.terminate(timeout=60)
    took = time.monotonic() - started

    assert code == 0, first.log()[-3000:]
    assert "warm shutdown" in first.log().lower(), first.log()[-3000:]
    # Every call in flight landed before the process exited: no row is left claimed, so none
    # waits for its lease to run out (a killed worker would leave them `running`).
    after = stack.counts("term")
    assert after["running"] == 0, after
    assert after["done"] < IMAGES, "nothing left for the second worker"
    assert "raised unexpected" not in first.log(), first.log()[-3000:]

    stack.start_worker(concurrency=32)
    # No stall detection: every open row must still have its message on the broker.
    done = stack.imgmod("wait", "term", "--stall-seconds", "600", "--timeout", "120")

    assert done.returncode == 0, done.stdout + done.stderr + stack.worker_logs()
    assert stack.counts("term")["done"] == IMAGES
    assert stack.results_per_item_max() == 1
    stats = stack.emulator.stats()
    assert stats["billed"] == IMAGES
    assert max(stats["billed_by_image"].values()) == 1
    assert stats["by_code"].get("500", 0) > 0  # the retries did happen
    print(f"warm shutdown took {took:.1f}s; rows open at exit {after}")
