"""Whole jobs against a misbehaving service: 403 storms, 405/500 answers, resets, slow answers,
malformed bodies, gateway 5xx, and retries running out.

Each test runs a real job (``imgmod run``, a Celery worker, a private Redis, SQLite) against the
emulator with one kind of fault switched on, then checks that every reference ended in the right
state, that each fault was retried under the code it is classified as (read from the worker's
"retry in" log lines), and what the emulator billed.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.support import Stack, start_imgmod, wait_until
from worker import store

pytestmark = pytest.mark.service


@pytest.mark.slow
def test_a_403_storm_converges_and_throttled_calls_stay_a_small_share(world: Stack) -> None:
    """The emulator caps the key at 10/s while workers believe 100/s: AIMD must find the cap."""
    n = 150
    world.emulator.configure(qps=10)
    world.start_worker(concurrency=16, IMGMOD_RETRY_PER_CODE="403=100")
    src = world.urls(n)
    run = start_imgmod(world.env, "run", str(src), "--job", "storm", stderr=subprocess.STDOUT)
    engine = store.make_engine(world.env["IMGMOD_DATABASE_URL"])
    try:

        def done() -> int:
            job = store.get_job(engine, "storm")
            return 0 if job is None else store.state_counts(engine, job.id)["done"]

        wait_until(lambda: done() >= n // 2, 120, "half of the job to be done")
        half = world.emulator.stats()
        output, _ = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
        engine.dispose()
    end = world.settled_stats()

    def throttled(s: dict[str, Any]) -> int:
        return int(s["by_code"].get("403", 0))

    whole = throttled(end) / end["calls"]
    second = (throttled(end) - throttled(half)) / (end["calls"] - half["calls"])
    print(
        f"\n403 storm: {end['calls']} calls, {throttled(end)} throttled: {whole:.1%} of the job, "
        f"{second:.1%} of its second half ({end['calls'] - half['calls']} calls)"
    )
    assert run.returncode == 0, output
    assert world.states("storm") == {"done": n}
    assert end["billed"] == n and max(end["billed_by_image"].values()) == 1
    assert set(world.retried_codes()) == {"403"}
    # Converged: the second half wastes far fewer calls than it spends on images.
    # Finding the cap costs a burst of 403s at first (the rate halves at most once a second);
    # after that, a converged limiter wastes few calls.
    assert second < 0.15, f"{second:.1%} of the second half's calls were throttled"
    assert whole < 0.6, f"{whole:.1%} of the job's calls were throttled"


def test_405_and_500_answers_are_retried_until_every_reference_is_done(world: Stack) -> None:
    n = 80
    world.emulator.configure(fault_405=0.1, fault_500=0.1)
    world.start_worker()

    run = world.imgmod("run", str(world.urls(n)), "--job", "codes")

    assert run.returncode == 0, run.stdout + run.stderr
    assert world.states("codes") == {"done": n}
    stats = world.settled_stats()
    assert stats["by_code"].get("405", 0) > 0 and stats["by_code"].get("500", 0) > 0
    assert stats["billed"] == n and max(stats["billed_by_image"].values()) == 1
    assert set(world.retried_codes()) == {"405", "500"}
    attempts = world.rows("SELECT sum(attempts) FROM items")[0][0]
    assert attempts == n + sum(world.retried_codes().values())  # one claim per retry, no more


@pytest.mark.parametrize(
    ("knobs", "worker_env", "codes"),
    [
        pytest.param({"fault_reset": 0.2}, {}, {"connection"}, id="connection-resets"),
        pytest.param(
            {"fault_slow": 0.15, "slow_ms": 3000},
            {"IMGMOD_READ_TIMEOUT": "1"},
            {"timeout"},
            id="slower-than-read-timeout",
        ),
        pytest.param({"fault_malformed": 0.2}, {}, {"malformed"}, id="malformed-bodies"),
        pytest.param({"fault_gateway_5xx": 0.2}, {}, {"HTTP 502", "HTTP 503"}, id="gateway-5xx"),
    ],
)
def test_transport_and_gateway_faults_are_retried_as_classified_and_billed_once(
    world: Stack, knobs: dict[str, float], worker_env: dict[str, str], codes: set[str]
) -> None:
    n = 60
    world.emulator.configure(**knobs)
    world.start_worker(**worker_env)

    run = world.imgmod("run", str(world.urls(n)), "--job", "faults")

    assert run.returncode == 0, run.stdout + run.stderr
    assert world.states("faults") == {"done": n}
    retried = world.retried_codes()
    assert retried and set(retried) <= codes, retried
    stats = world.settled_stats()
    if "timeout" in codes:
        # The service answered (and billed) each call the client stopped waiting for; that is
        # the vendor's behaviour, not a double charge imgmod could avoid. Everything else once.
        assert stats["billed"] == n + retried["timeout"]
    else:
        assert stats["billed"] == n
        assert max(stats["billed_by_image"].values()) == 1
    assert len(stats["billed_by_image"]) == n


def test_exhausted_retries_end_failed_with_the_last_code_and_attempt_count(world: Stack) -> None:
    n = 5
    world.emulator.configure(fault_500=1.0)
    world.start_worker(IMGMOD_RETRY_PER_CODE="500=2")

    run = world.imgmod("run", str(world.urls(n)), "--job", "exhausted")

    assert run.returncode == 3, run.stdout + run.stderr
    assert world.states("exhausted") == {"failed": n}
    rows = world.rows("SELECT state, last_code, attempts, last_error FROM items")
    assert {(r.state, r.last_code, r.attempts) for r in rows} == {("failed", "500", 2)}
    assert all("retried later" in r.last_error or "500" in r.last_error for r in rows)
    assert world.settled_stats()["billed"] == 0
    report = json.loads(world.imgmod("report", "exhausted", "--json").stdout)
    assert report["failures_by_code"] == {"500": n}
    assert report["billable_calls"] == 0
