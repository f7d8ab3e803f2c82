"""The broker loses every message mid-job (a restart without persistence, or FLUSHALL): workers
reconnect, `imgmod run` notices the stall and republishes, `imgmod resume` does the same by
hand; nothing is lost and nothing is paid for twice."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from tests.support import wait_until

pytestmark = [pytest.mark.service, pytest.mark.slow]

IMAGES = 300
STALL_SECONDS = 8
# Threads of the worker whose broker loses its messages: few enough that most of the job's
# messages wait in the broker when it does (each thread holds one message of up to
# IMGMOD_IDS_PER_MESSAGE = 16 ids: 32 threads would hold all of 300 images, and then nothing is
# lost; 4 hold at most 64). 4 threads make 4 calls at a time: ~8 images/s at the emulator's 500 ms.
HOLDING_FEW = 4


def _lose_messages(stack: Any, how: str) -> None:
    if how == "restart":
        stack.broker.restart()
    else:
        client = redis.Redis.from_url(stack.broker.url)
        try:
            client.flushall()
        finally:
            client.close()


def _mid_job(stack: Any, job: str) -> None:
    """Every row published (none pending), some done, many still open."""

    def ready() -> bool:
        counts = stack.counts(job)
        return counts["pending"] == 0 and counts["done"] >= 40

    stack.wait_for_job(job)
    wait_until(ready, 90, f"job {job} to be under way")
    assert stack.counts(job)["done"] < IMAGES - 60, "the job ran too fast to break it mid-way"


def _assert_complete_and_billed_once(stack: Any, job: str) -> None:
    counts = stack.counts(job)
    assert counts["done"] == IMAGES, counts
    assert stack.results_per_item_max() == 1
    stats = stack.emulator.stats()
    assert stats["billed"] == IMAGES, stats["billed"]
    assert max(stats["billed_by_image"].values()) == 1


@pytest.mark.parametrize("how", ["restart", "flushall"])
def test_run_republishes_after_the_broker_lost_its_messages(stack: Any, how: str) -> None:
    src, _ = stack.write_urls("lost.txt", IMAGES)
    worker = stack.start_worker(concurrency=HOLDING_FEW)
    run = stack.imgmod_background(
        "run", str(src), "--job", "lost", "--stall-seconds", str(STALL_SECONDS), "--timeout", "150"
    )
    _mid_job(stack, "lost")

    _lose_messages(stack, how)
    out, err = run.communicate(timeout=180)

    assert run.returncode == 0, out + err + stack.worker_logs()
    assert f"no progress for {STALL_SECONDS}s" in err and "re-enqueued" in err, err
    _assert_complete_and_billed_once(stack, "lost")
    log = worker.log()
    if how == "restart":
        # the one worker finished the job, so it reconnected; its log says so
        assert "Connection to broker lost" in log or "Cannot connect" in log, log[-3000:]
    assert "raised unexpected" not in log, log[-3000:]  # no task failed (Celery's wording)


def test_resume_brings_a_job_home_after_the_broker_restarted(stack: Any) -> None:
    src, _ = stack.write_urls("resume.txt", IMAGES)
    worker = stack.start_worker(concurrency=HOLDING_FEW)
    stack.imgmod("enqueue", str(src), "--job", "resume", check=True)
    _mid_job(stack, "resume")

    _lose_messages(stack, "restart")

    # The messages are gone: progress stops once the calls in flight have landed.
    def settled() -> bool:
        counts = stack.counts("resume")
        return counts["running"] == 0

    wait_until(settled, 60, "the calls in flight at the restart to land")
    stuck = stack.counts("resume")
    assert stuck["queued"] > 0, stuck

    resumed = stack.imgmod("resume", "resume", check=True)
    assert f"re-enqueued {stuck['queued']} references" in resumed.stdout, resumed.stdout
    done = stack.imgmod("wait", "resume", "--stall-seconds", "600", "--timeout", "120")

    assert done.returncode == 0, done.stdout + done.stderr + stack.worker_logs()
    _assert_complete_and_billed_once(stack, "resume")
    assert "raised unexpected" not in worker.log(), worker.log()[-3000:]


def test_limiter_outage_hands_rows_back_and_the_job_still_completes(
    stack: Any, tmp_path: Any
) -> None:
    """The limiter's Redis (here apart from the broker) goes away mid-job: no permit, no call;
    each task hands its row back and retries, none fails, and the job ends with no help."""
    from worker.processes import PrivateRedis, free_port

    limiter = PrivateRedis(port=free_port(), directory=tmp_path)
    limiter.start()
    try:
        src, _ = stack.write_urls("limiter.txt", IMAGES)
        worker = stack.start_worker(concurrency=32, IMGMOD_LIMITER_URL=limiter.url)
        stack.imgmod("enqueue", str(src), "--job", "limiter", check=True)
        _mid_job(stack, "limiter")

        limiter.stop()
        wait_until(
            lambda: worker.log().count("limiter unavailable") >= 20,
            60,
            "tasks to find the limiter gone",
        )
        limiter.start()
        done = stack.imgmod("wait", "limiter", "--stall-seconds", "600", "--timeout", "120")
    finally:
        limiter.stop()

    assert done.returncode == 0, done.stdout + done.stderr + stack.worker_logs()
    assert "re-enqueued" not in done.stderr
    _assert_complete_and_billed_once(stack, "limiter")


def test_run_does_not_republish_rows_whose_retries_wait_out_their_backoff(stack: Any) -> None:
    """Every call answers 500 for a while: rows sit `queued` for seconds between attempts with
    nothing closing. That is a slow job, not a lost broker: no republishing."""
    backoff = {"IMGMOD_BACKOFF_BASE": "3", "IMGMOD_BACKOFF_CAP": "4", "IMGMOD_MAX_ATTEMPTS": "30"}
    stack.emulator.configure(fault_500=1.0, latency_ms=50)
    src, _ = stack.write_urls("retry.txt", 5)
    stack.start_worker(concurrency=8, **backoff)
    run = stack.imgmod_background(
        "run", str(src), "--job", "retry", "--stall-seconds", "1", "--timeout", "120", **backoff
    )
    stack.wait_for_job("retry")
    wait_until(
        lambda: stack.scalar("SELECT coalesce(sum(attempts), 0) FROM items") >= 20,
        90,
        "several rounds of retries",
    )
    stack.emulator.configure(fault_500=0.0)
    out, err = run.communicate(timeout=120)

    assert run.returncode == 0, out + err + stack.worker_logs()
    assert "stall detection waits 9s, not 1s" in err, err
    assert "re-enqueued" not in err, err
    stats = stack.emulator.stats()
    assert stats["billed"] == 5 and max(stats["billed_by_image"].values()) == 1
