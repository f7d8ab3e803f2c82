"""Fault choice from one uniform draw, and validated runtime knob changes."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from worker.emulator.faults import Fault, Knobs, choose_fault, updated_knobs


def test_no_fault_when_all_probabilities_are_zero() -> None:
    assert choose_fault(Knobs(), 0.0) is None


def test_probability_one_always_faults() -> None:
    knobs = Knobs(fault_500=1.0)
    assert {choose_fault(knobs, d / 100) for d in range(100)} == {Fault.CODE_500}


def test_draws_split_by_cumulative_probability() -> None:
    knobs = Knobs(fault_reset=0.1, fault_405=0.2)
    assert choose_fault(knobs, 0.05) is Fault.RESET
    assert choose_fault(knobs, 0.15) is Fault.CODE_405
    assert choose_fault(knobs, 0.35) is None


def test_fault_rates_follow_the_probabilities_with_a_seed() -> None:
    knobs = Knobs(fault_malformed=0.25, fault_gateway_5xx=0.25)
    rng = random.Random(7)
    counts = Counter(choose_fault(knobs, rng.random()) for _ in range(4000))
    assert 900 < counts[Fault.MALFORMED] < 1100
    assert 900 < counts[Fault.GATEWAY_5XX] < 1100


def test_the_same_seed_gives_the_same_fault_sequence() -> None:
    knobs = Knobs(fault_reset=0.2, fault_500=0.2, fault_slow=0.2)
    first, second = random.Random(42), random.Random(42)
    assert [choose_fault(knobs, first.random()) for _ in range(200)] == [
        choose_fault(knobs, second.random()) for _ in range(200)
    ]


def test_knob_updates_apply_and_leave_the_rest() -> None:
    knobs = updated_knobs(Knobs(), {"qps": 5, "fault_slow": 0.5})
    assert knobs.qps == 5.0 and knobs.fault_slow == 0.5 and knobs.latency_ms == 0.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"qsp": 5}, "unknown knob"),
        ({"qps": "fast"}, "must be a number"),
        ({"qps": True}, "must be a number"),
        ({"latency_ms": -1}, "negative"),
        ({"fault_500": 1.5}, "probability"),
    ],
)
def test_bad_knob_updates_are_refused_with_the_reason(changes, message) -> None:
    with pytest.raises(ValueError, match=message):
        updated_knobs(Knobs(), changes)
