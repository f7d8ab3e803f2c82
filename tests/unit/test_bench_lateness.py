"""``bench/throughput.py --lateness`` reads the workers' own lateness histogram: the figures
it prints must be the ones the workers recorded (bench/lateness.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from worker.metrics import Metrics

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def lateness() -> Iterator[object]:
    sys.path.insert(0, str(BENCH))
    import lateness

    yield lateness
    sys.path.remove(str(BENCH))


def _exposition(lates: list[float]) -> str:
    metrics = Metrics()
    for late in lates:
        metrics.observe_wait(0.1, late)
    return generate_latest(metrics.registry).decode()


def test_two_processes_scrapes_add_up_to_the_calls_each_recorded(lateness) -> None:
    one = lateness.buckets(_exposition([0.0005, 0.003, 0.012]))
    two = lateness.buckets(_exposition([0.0002, 0.02]))
    total = lateness.summed([one, two])
    assert total[float("inf")] == 5
    assert total[0.001] == 2
    assert total[0.01] == 3  # 12 ms and 20 ms are over 10 ms
    assert total[0.015] == 4
    text = lateness.describe(total)
    assert "within 1 ms 40.0 %, 5 ms 60.0 %" in text
    assert "over 10 ms 40.00 %, 15 ms 20.00 %, 25 ms 0.00 % (of 5 calls)" in text


def test_no_histogram_says_so(lateness) -> None:
    assert lateness.buckets("") == {}
    assert lateness.describe({}) == "no calls recorded"


def test_the_metrics_ports_of_a_group_are_free_together(lateness) -> None:
    import socket

    base = lateness.free_ports(3)
    for port in range(base, base + 3):
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
