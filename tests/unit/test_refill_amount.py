"""The publishing window's decisions (pure) and its settings."""

from __future__ import annotations

import pytest

from worker.settings import ConfigError, load_settings
from worker.window import refill_amount


@pytest.mark.parametrize(
    ("backlog", "window", "low_water", "publish"),
    [
        (0, 20_000, 0.5, 20_000),  # empty: fill it
        (9_999, 20_000, 0.5, 10_001),  # just under half: back to full
        (10_000, 20_000, 0.5, 0),  # half or more: wait, refills come in big batches
        (19_000, 20_000, 1.0, 1_000),  # the producer tops up whenever it is not full
        (20_000, 20_000, 1.0, 0),
        (25_000, 20_000, 1.0, 0),  # over (retries, resumed duplicates): never negative
        (0, 1, 0.5, 1),  # the smallest window still moves
        (1, 1, 0.5, 0),
    ],
)
def test_refill_amount_fills_the_window_once_below_its_low_water_mark(
    backlog: int, window: int, low_water: float, publish: int
) -> None:
    assert refill_amount(backlog, window, low_water) == publish


def test_window_and_broker_timeout_have_bounded_defaults() -> None:
    settings = load_settings({})
    assert settings.queue_window == 20_000  # ~20 MB of Redis at ~1 KB a message
    assert settings.broker_timeout == 5.0
    custom = load_settings({"IMGMOD_QUEUE_WINDOW": "500", "IMGMOD_BROKER_TIMEOUT": "0.5"})
    assert (custom.queue_window, custom.broker_timeout) == (500, 0.5)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("IMGMOD_QUEUE_WINDOW", "0", "at least 1"),
        ("IMGMOD_QUEUE_WINDOW", "lots", "not an integer"),
        ("IMGMOD_BROKER_TIMEOUT", "0", "greater than 0"),
        ("IMGMOD_BROKER_TIMEOUT", "soon", "not a number"),
    ],
)
def test_a_bad_window_or_broker_timeout_is_refused_by_name(
    name: str, value: str, says: str
) -> None:
    with pytest.raises(ConfigError, match=f"{name}=.*{says}"):
        load_settings({name: value})
