"""How late calls left after their permits' slots, read from the workers' own metrics.

``bench/throughput.py --lateness`` turns on each worker process's Prometheus endpoint
(``IMGMOD_METRICS_PORT``, process *i* on PORT + *i*) and, at the end of the job, sums the
``imgmod_call_lateness_seconds`` histogram over them. Why it is printed beside the 403s: the
service refuses a call when the calls of a whole second arrive within one, which a call
leaving late by more than the margin's slack (1/margin - 1 of a second: 10 ms at 0.99,
15 ms at 0.985) causes; the share of calls that late is what the learned margin settles on.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

import requests
from prometheus_client.parser import text_string_to_metric_families

from worker.processes import free_port

METRIC = "imgmod_call_lateness_seconds"
SHOWN = (0.001, 0.005)  # printed as "within"
OVER = (0.01, 0.015, 0.025)  # printed as "over": the slack at 0.99, 0.985, 0.975


def free_ports(count: int, attempts: int = 50) -> int:
    """A port P with P .. P + count - 1 all free on 127.0.0.1 now (the base of one
    ``imgmod worker``'s metrics endpoints)."""
    for _ in range(attempts):
        base = free_port()
        if base + count > 65535:
            continue
        if all(_free(base + i) for i in range(1, count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports on 127.0.0.1")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def buckets(exposition: str) -> dict[float, float]:
    """The lateness histogram's cumulative buckets (``le`` -> calls) in one scrape (pure)."""
    found: dict[float, float] = {}
    for family in text_string_to_metric_families(exposition):
        if family.name != METRIC:
            continue
        for sample in family.samples:
            if sample.name == f"{METRIC}_bucket":
                found[float(sample.labels["le"])] = sample.value
    return found


def summed(scrapes: Iterable[dict[float, float]]) -> dict[float, float]:
    """Several processes' buckets added up (pure)."""
    total: dict[float, float] = {}
    for one in scrapes:
        for le, n in one.items():
            total[le] = total.get(le, 0.0) + n
    return total


def scrape(ports: Iterable[int]) -> dict[float, float]:
    """The summed buckets of the endpoints on ``ports`` (127.0.0.1)."""
    return summed(
        buckets(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text) for port in ports
    )


def describe(cumulative: dict[float, float]) -> str:
    """``within 1 ms 61.2 %, ...; over 10 ms 0.41 %, ...`` of all calls (pure)."""
    calls = cumulative.get(float("inf"), 0.0)
    if not calls:
        return "no calls recorded"
    within = ", ".join(
        f"{le * 1000:g} ms {100 * cumulative.get(le, 0) / calls:.1f} %" for le in SHOWN
    )
    over = ", ".join(
        f"{le * 1000:g} ms {100 * (calls - cumulative.get(le, 0)) / calls:.2f} %" for le in OVER
    )
    return f"within {within}; over {over} (of {calls:.0f} calls)"
