"""``bench/throughput.py --by-thread`` splits a worker's CPU by kind of thread, and its bare call
holds the pace it promises at any latency: the figures issue 12's second target is judged on."""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def bench() -> Iterator[tuple[ModuleType, ModuleType, ModuleType]]:
    """(stack, throughput, the profiling sitecustomize), imported from bench/; the
    sitecustomize under another name, and with neither of its variables set it changes
    nothing when imported."""
    sys.path.insert(0, str(BENCH))
    import stack
    import throughput

    spec = importlib.util.spec_from_file_location(
        "bench_sitecustomize", BENCH / "profiling" / "sitecustomize.py"
    )
    assert spec is not None and spec.loader is not None
    names = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(names)
    yield stack, throughput, names
    sys.path.remove(str(BENCH))


def test_a_thread_is_named_by_its_kind(bench) -> None:
    _, _, names = bench
    assert names.kernel_name("imgmod-call_17") == "imgmod-call"
    assert names.kernel_name("ThreadPoolExecutor-0_95") == "executor-0"
    assert names.kernel_name("MainThread") == "main"
    assert names.kernel_name("imgmod-call-deadline") == "imgmod-call-dea"  # the kernel's 15


def test_the_cpu_of_a_named_thread_is_counted_under_its_name(bench) -> None:
    stack, _, names = bench
    before = stack.thread_cpu([os.getpid()])["imgmod-burn"]

    def burn() -> None:
        names._name_for_kernel("imgmod-burn_0")
        start = time.thread_time()
        while time.thread_time() - start < 0.2:
            sum(range(1000))

    thread = threading.Thread(target=burn)
    thread.start()
    # Read while it is alive (an ended thread leaves /proc/PID/task): it names itself first.
    deadline = time.monotonic() + 30
    seen = 0.0
    while thread.is_alive() and time.monotonic() < deadline:
        seen = max(seen, stack.thread_cpu([os.getpid()])["imgmod-burn"] - before)
    thread.join()
    assert 0.1 <= seen <= 5.0
    # Gone with its thread (the kernel's task may outlive Python's join by a moment).
    while stack.thread_cpu([os.getpid()])["imgmod-burn"] != 0:
        assert time.monotonic() < deadline, "an ended thread still counted"


@pytest.mark.parametrize(
    ("latency_ms", "jitter_ms", "threads"),
    [(300, 100, 48), (1000, 100, 132), (2000, 0, 240)],
)
def test_the_bare_pool_holds_nine_tenths_of_the_cap_at_any_latency(
    bench, latency_ms: float, jitter_ms: float, threads: int
) -> None:
    _, throughput, _ = bench
    pool = throughput.bare_threads(100, latency_ms, jitter_ms)
    assert pool == threads
    # Little's law: calls per second a pool holds = threads / seconds per call.
    assert pool / ((latency_ms + jitter_ms) / 1000) >= 0.9 * 100
