"""A worker killed with SIGKILL mid-job: its messages come back, nothing is lost, and only the
calls it had in flight may be paid for twice."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from worker.local import wait_until

pytestmark = [pytest.mark.service, pytest.mark.slow]

IMAGES = 300


def test_killed_worker_s_messages_are_redelivered_and_only_in_flight_calls_bill_twice(
    any_db_stack: Any,
) -> None:
    s = any_db_stack
    # kombu's sweep runs every unacked_restore_interval (5 s, worker/app.py); a restored message
    # is claimable once the dead worker's lease is over; the rest is the survivor's backlog.
    recovery_bound = s.visibility_timeout + 5 + s.lease_seconds + 20
    src, _ = s.write_urls("crash.txt", IMAGES)
    first = s.start_worker(concurrency=32)
    enq = s.imgmod("enqueue", str(src), "--job", "crash", check=True)
    assert f"{IMAGES} accepted" in enq.stdout

    wait_until(
        lambda: s.counts("crash")["done"] >= 40 and s.counts("crash")["running"] >= 10,
        90,
        "the first worker to be busy mid-job",
    )
    first.kill()
    killed_at = time.monotonic()
    # Nothing writes the rows between the kill and the next worker: this is the state at the kill.
    # Rows in `running` are the right bound for double billing, not the emulator's concurrency:
    # a row is billed twice only if the dead worker paid for it and never stored the answer, and
    # every such row was claimed (running) and not done. It covers calls in flight at the
    # emulator, answers on the wire, and answers received but not yet written; the emulator's
    # in_flight sees only the first kind, and its max_concurrency is a peak over the whole run.
    running_ids = {
        int(i) for (i,) in s.rows("SELECT id FROM items WHERE state = 'running' ORDER BY id")
    }
    running_at_kill = len(running_ids)
    emulator_in_flight = s.emulator.stats()["in_flight"]
    assert running_at_kill > 0

    s.start_worker(concurrency=32)
    # Nothing but the new worker runs now (no `imgmod run`/`wait`, so no stall detection): the
    # dead worker's claimed rows can only come back through kombu restoring their unacked
    # messages (visibility timeout, swept every unacked_restore_interval by a live consumer).
    ids = ",".join(map(str, sorted(running_ids)))

    def claimed_rows_done() -> bool:
        sql = f"SELECT count(*) FROM items WHERE state = 'done' AND id IN ({ids})"
        return int(s.scalar(sql)) == running_at_kill

    wait_until(claimed_rows_done, recovery_bound, "the dead worker's rows to be redelivered")
    recovered_in = time.monotonic() - killed_at

    # kombu's Redis transport pops a message (BRPOP) before it records it as unacked: one
    # message per consuming connection can be lost in a SIGKILL. Its row is still `queued`;
    # stall detection republishes it.
    done = s.imgmod("wait", "crash", "--stall-seconds", "10", "--timeout", "120")
    assert done.returncode == 0, done.stdout + done.stderr + s.worker_logs()
    republished = [int(n) for n in re.findall(r"re-enqueued (\d+)", done.stderr)]
    assert sum(republished) <= 1, done.stderr

    counts = s.counts("crash")
    assert counts["done"] == IMAGES, counts
    assert s.results_per_item_max() == 1
    stats = s.emulator.stats()
    assert len(stats["billed_by_image"]) == IMAGES
    extra = stats["billed"] - IMAGES
    assert 0 <= extra <= running_at_kill, (extra, running_at_kill, emulator_in_flight)
    print(
        f"running at kill {running_at_kill}, emulator in flight {emulator_in_flight}, "
        f"billed twice {extra}, claimed rows recovered in {recovered_in:.1f}s, "
        f"republished by stall detection {sum(republished)}"
    )


def test_message_restored_before_the_dead_worker_s_lease_ends_waits_for_it(stack: Any) -> None:
    """Restored while the dead worker's lease still runs (lease longer than the visibility
    timeout): the message is not dropped as "leased elsewhere" but looks again later."""
    lease = stack.visibility_timeout + 6
    env = {"IMGMOD_LEASE_SECONDS": str(lease)}
    src, _ = stack.write_urls("early.txt", 120)
    first = stack.start_worker(concurrency=32, **env)
    stack.imgmod("enqueue", str(src), "--job", "early", check=True)
    wait_until(lambda: stack.counts("early")["running"] >= 10, 90, "the first worker to be busy")
    first.kill()
    claimed = stack.counts("early")["running"]
    second = stack.start_worker(concurrency=32, **env)

    wait_until(
        lambda: (
            stack.counts("early")["done"] + stack.counts("early")["queued"] == 120
            and stack.counts("early")["running"] == 0
        ),
        stack.visibility_timeout + 5 + lease + 20,
        "the dead worker's rows to be redelivered and claimed after its lease",
    )
    assert "leased by another worker" in second.log(), second.log()[-3000:]
    done = stack.imgmod("wait", "early", "--stall-seconds", "10", "--timeout", "60")
    assert done.returncode == 0, done.stdout + done.stderr + stack.worker_logs()
    assert sum(int(n) for n in re.findall(r"re-enqueued (\d+)", done.stderr)) <= 1
    assert stack.emulator.stats()["billed"] - 120 <= claimed
