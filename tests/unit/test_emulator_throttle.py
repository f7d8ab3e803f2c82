"""The per-key sliding one-second QPS window."""

from __future__ import annotations

from worker.emulator.throttle import SlidingWindow


def test_admits_up_to_the_cap_within_one_second() -> None:
    window = SlidingWindow(3)
    assert [window.admit("k", 10.0 + i * 0.1) for i in range(4)] == [True, True, True, False]


def test_a_slot_frees_exactly_one_second_after_its_call() -> None:
    window = SlidingWindow(2)
    assert window.admit("k", 0.0) and window.admit("k", 0.5)
    assert not window.admit("k", 0.99)
    assert window.admit("k", 1.0)
    assert not window.admit("k", 1.2)
    assert window.admit("k", 1.5)


def test_throttled_calls_do_not_consume_the_window() -> None:
    window = SlidingWindow(1)
    assert window.admit("k", 0.0)
    for i in range(50):
        assert not window.admit("k", 0.01 * (i + 1))
    assert window.admit("k", 1.0)
    assert window.in_window("k", 1.0) == 1


def test_keys_have_separate_windows() -> None:
    window = SlidingWindow(1)
    assert window.admit("a", 0.0)
    assert window.admit("b", 0.0)
    assert not window.admit("a", 0.1)


def test_cap_change_applies_to_the_next_call() -> None:
    window = SlidingWindow(100)
    for i in range(5):
        assert window.admit("k", i * 0.01)
    window.cap = 2
    assert not window.admit("k", 0.1)
