"""The limiter's learned margin against a real Redis: a lone 403 is forgiven, a jitter 403
widens it instead of cutting the rate, a second one soon after still cuts, and quiet seconds
win the room back. The step rules are tested with ``forgive=0`` (every 403 counts), the
forgiveness on its own.

The arithmetic (which 403 does what) lives in the Lua scripts, so it is tested where it runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from worker.late_calls import late_key
from worker.limits import Margin, RateLimiter
from worker.permits import Grant
from worker.processes import wait_until

pytestmark = pytest.mark.service

SECOND_US = 1_000_000
# Learns from every 403 (none forgiven), no regain.
LEARNING = Margin(forgive=0.0, start=0.98, most=0.99, least=0.9, step=0.02, regain=0.0)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def limiter(
    client: redis.Redis,
    margin: Margin,
    key: str | None = None,
    *,
    qps: float = 100,
    decrease_window: float = 0.2,
    increase_per_second: float = 0.001,  # by default no recovery from a cut within the test
) -> RateLimiter:
    return RateLimiter(
        client,
        key=key or f"test:margin:{uuid.uuid4().hex}",
        qps=qps,
        margin=margin,
        decrease_window=decrease_window,
        increase_per_second=increase_per_second,
    )


def test_permits_are_paced_at_the_cap_times_the_starting_margin(client: redis.Redis) -> None:
    lim = limiter(client, Margin(forgive=0.0, start=0.9, most=0.99, least=0.5))
    assert lim.current() == (pytest.approx(90), pytest.approx(0.9))
    slots = [lim.acquire_grant(timeout=5).slot_us for _ in range(10)]
    gaps = [b - a for a, b in zip(slots, slots[1:], strict=False)]
    assert min(gaps) >= SECOND_US // 90


def test_a_first_jitter_403_widens_the_margin_and_cuts_nothing(client: redis.Redis) -> None:
    lim = limiter(
        client, Margin(forgive=0.0, start=0.98, most=0.99, least=0.9, step=0.02, regain=0.0)
    )
    lim.on_throttled()
    rate, margin = lim.current()
    assert margin == pytest.approx(0.96)
    assert rate == pytest.approx(96)  # the ceiling moved; no AIMD cut below it
    for _ in range(3):  # jitter's few more 403s in the same second are the same signal
        lim.on_throttled()
    assert lim.current() == (pytest.approx(96), pytest.approx(0.96))


def test_a_dense_volley_of_403s_is_a_lower_cap_and_cuts_fully_at_once(client: redis.Redis) -> None:
    lim = limiter(
        client, Margin(forgive=0.0, start=0.98, most=0.99, least=0.9, step=0.02, regain=0.0)
    )
    for _ in range(10):  # many threads' 403s within one second: the service allows less now
        lim.on_throttled()
    assert lim.current() == (pytest.approx(48, rel=0.01), pytest.approx(0.96))
    for _ in range(20):  # the rest of that volley: one cut, not one per 403
        lim.on_throttled()
    assert lim.current()[0] == pytest.approx(48, rel=0.01)


def test_a_dense_volley_is_a_tenth_of_a_second_s_permits_at_a_higher_cap(
    client: redis.Redis,
) -> None:
    lim = limiter(
        client,
        LEARNING,
        qps=1000,
        decrease_window=2.0,  # one volley however slow a loaded box makes 96 round trips
    )
    for _ in range(10):  # at 1,000/s ten 403s in a volley are a 10 ms bunch: still jitter
        lim.on_throttled()
    assert lim.current() == (pytest.approx(960), pytest.approx(0.96))
    for _ in range(86):  # 96 in the volley: a tenth of a second's permits
        lim.on_throttled()
    assert lim.current()[0] == pytest.approx(480, rel=0.01)


def test_a_second_403_soon_after_is_a_lower_cap_and_cuts_the_rate(client: redis.Redis) -> None:
    lim = limiter(
        client, Margin(forgive=0.0, start=0.98, most=0.99, least=0.9, step=0.02, regain=0.0)
    )
    lim.on_throttled()
    wait_until(lambda: _older_than(lim, "lowered_at", 0.25), 5, "the volley window to pass")
    lim.on_throttled()
    rate, margin = lim.current()
    assert margin == pytest.approx(0.94)
    assert rate == pytest.approx(96 * 0.9, rel=0.01)  # a gentle cut, never a halving, near it


def test_the_margin_never_widens_past_its_floor_and_then_403s_cut(client: redis.Redis) -> None:
    lim = limiter(
        client, Margin(forgive=0.0, start=0.95, most=0.99, least=0.95, step=0.02, regain=0.0)
    )
    lim.on_throttled()
    rate, margin = lim.current()
    assert margin == pytest.approx(0.95)
    assert rate < 95 * 0.95  # nothing left to learn: a cut, as with a fixed margin


def test_quiet_seconds_win_the_margin_back_up_to_most(client: redis.Redis) -> None:
    lim = limiter(
        client, Margin(forgive=0.0, start=0.98, most=0.99, least=0.9, step=0.05, regain=0.5)
    )
    lim.on_throttled()
    assert lim.current()[1] < 0.95
    wait_until(lambda: lim.current()[1] == pytest.approx(0.99), 5, "the margin to recover")


def test_without_403s_the_margin_climbs_from_start_to_most(client: redis.Redis) -> None:
    lim = limiter(
        client, Margin(forgive=0.0, start=0.9, most=0.99, least=0.5, step=0.01, regain=0.5)
    )
    lim.acquire()  # the first permit starts the margin's clock
    wait_until(lambda: lim.current()[1] == pytest.approx(0.99), 5, "the margin to reach most")


def test_every_limiter_on_the_key_paces_at_the_learned_margin(client: redis.Redis) -> None:
    key = f"test:margin:{uuid.uuid4().hex}"
    margin = Margin(forgive=0.0, start=0.98, most=0.99, least=0.9, step=0.03, regain=0.0)
    a = limiter(client, margin, key)
    b = limiter(redis.Redis(connection_pool=client.connection_pool), margin, key)
    a.on_throttled()
    assert b.current() == (pytest.approx(95), pytest.approx(0.95))


def test_a_third_mild_reaction_in_a_row_is_a_lower_cap_and_cuts_fully(
    client: redis.Redis,
) -> None:
    lim = limiter(
        client, Margin(forgive=0.0, start=0.98, most=0.99, least=0.9, step=0.02, regain=0.0)
    )
    lim.on_throttled()  # margin 0.96, no cut
    wait_until(lambda: _older_than(lim, "lowered_at", 0.25), 5, "the volley window to pass")
    lim.on_throttled()  # margin 0.94, gentle cut to 86.4
    assert lim.current()[0] == pytest.approx(86.4, rel=0.01)
    wait_until(lambda: _older_than(lim, "cut_at", 0.25), 5, "the volley window to pass")
    lim.on_throttled()  # the 403s go on: a lower cap, halved
    assert lim.current()[0] == pytest.approx(43.2, rel=0.02)


def test_lone_403s_once_the_rate_is_back_at_the_ceiling_are_not_strikes(
    client: redis.Redis,
) -> None:
    lim = limiter(
        client,
        LEARNING,
        increase_per_second=100.0,  # recovery as fast as the bound allows: 10 % of the cut/s
    )
    lim.on_throttled()  # margin 0.96, no cut
    wait_until(lambda: _older_than(lim, "lowered_at", 0.25), 5, "the volley window to pass")
    lim.on_throttled()  # margin 0.94, gentle cut to 86.4
    assert lim.current()[0] < 0.97 * 94
    wait_until(lambda: lim.current()[0] >= 0.97 * 94, 5, "the rate to recover")
    lim.on_throttled()  # jitter at the full rate again: a gentle cut at most, never a halving
    assert lim.current()[0] > 0.85 * 92


def test_a_403_well_below_the_ceiling_halves_the_rate(client: redis.Redis) -> None:
    lim = limiter(
        client, Margin(forgive=0.0, start=0.98, most=0.99, least=0.9, step=0.02, regain=0.0)
    )
    for _ in range(10):
        lim.on_throttled()  # a dense volley: the ceiling widened to 96, then halved to 48
    wait_until(lambda: _older_than(lim, "cut_at", 0.25), 5, "the volley window to pass")
    lim.on_throttled()  # still 403s at half the ceiling: a real, lower cap
    assert lim.current()[0] == pytest.approx(24, rel=0.01)


def test_a_fixed_margin_is_the_old_limiter(client: redis.Redis) -> None:
    lim = limiter(client, Margin.fixed(1.0))
    lim.on_throttled()
    rate, margin = lim.current()
    assert margin == 1.0 and rate == pytest.approx(90)  # near_cap_factor 0.9 on a calm 403


def _older_than(lim: RateLimiter, field: str, seconds: float) -> bool:
    at = lim.client.hget(lim.key, field)
    server_s, server_us = lim.client.time()
    return at is not None and server_s * SECOND_US + server_us - int(float(at)) > seconds * 1e6


def test_bad_margins_are_refused() -> None:
    with pytest.raises(ValueError, match="least"):
        Margin(forgive=0.0, start=0.99, most=0.98)
    with pytest.raises(ValueError, match="negative"):
        Margin(step=-0.1)
    with pytest.raises(ValueError, match="negative"):
        Margin(forgive=-1.0)
    assert Margin.fixed(0.98).forgive == 0.0


def forgiving(forgive: float) -> Margin:
    return Margin(start=0.98, most=0.99, least=0.9, step=0.02, regain=0.0, forgive=forgive)


def test_a_lone_403_at_the_full_rate_is_forgiven_and_the_next_takes_the_step(
    client: redis.Redis,
) -> None:
    lim = limiter(client, forgiving(20.0))
    lim.on_throttled()  # the first in 20 s: nothing moves
    assert lim.current() == (pytest.approx(98), pytest.approx(0.98))
    assert client.hget(lim.key, "forgiven_at") is not None
    lim.on_throttled()  # a second (even in the same burst): the step, as without forgiveness
    assert lim.current() == (pytest.approx(96), pytest.approx(0.96))
    wait_until(lambda: _older_than(lim, "lowered_at", 0.25), 5, "the volley window to pass")
    lim.on_throttled()  # within 20 s of a step: a mild reaction again, never forgiven
    assert lim.current() == (pytest.approx(86.4, rel=0.01), pytest.approx(0.94))  # 96 x 0.9


def test_after_forgive_quiet_seconds_a_lone_403_is_forgiven_again(client: redis.Redis) -> None:
    lim = limiter(client, forgiving(0.3))
    lim.on_throttled()  # forgiven
    lim.on_throttled()  # the step: margin 0.96
    wait_until(
        lambda: _older_than(lim, "lowered_at", 0.35) and _older_than(lim, "forgiven_at", 0.35),
        5,
        "0.3 s without a 403",
    )
    lim.on_throttled()  # lone again: forgiven, the learned margin kept
    assert lim.current() == (pytest.approx(96), pytest.approx(0.96))


def test_a_lone_403_well_below_the_ceiling_is_never_forgiven(client: redis.Redis) -> None:
    lim = limiter(client, forgiving(0.3))
    for _ in range(11):  # one forgiven, then a dense volley: the margin at 0.96, halved to 48
        lim.on_throttled()
    assert lim.current()[0] == pytest.approx(48, rel=0.01)
    wait_until(
        lambda: all(_older_than(lim, f, 0.35) for f in ("lowered_at", "forgiven_at", "cut_at")),
        5,
        "0.3 s without a 403",
    )
    lim.on_throttled()  # lone, but at half the ceiling: a real, lower cap
    assert lim.current()[0] == pytest.approx(24, rel=0.01)


def _late_calls_then_refusals(
    lim: RateLimiter, client: redis.Redis, late: int, refused: int
) -> None:
    """``late`` calls that left 20 ms after their slots, 10 ms apart; then ``refused`` 403s
    for the calls a second later (a host that stalled, then the service's answer to it)."""
    sec, usec = client.time()
    base = sec * SECOND_US + usec - 2 * SECOND_US
    for i in range(late):
        lim.note_late(Grant(waited=0.02, slot_us=base + i * 10_000, late=0.02))
    for i in range(refused):
        lim.on_throttled(base + SECOND_US + i * 10_000)


def test_403s_our_own_late_calls_explain_widen_the_margin_and_never_cut(
    client: redis.Redis,
) -> None:
    lim = limiter(client, LEARNING)
    lim.note_late(Grant(waited=0.0, slot_us=1_000, late=0.005))  # 5 ms: costs no 403
    assert client.zcard(late_key(lim.key)) == 0
    _late_calls_then_refusals(lim, client, late=12, refused=12)
    # Twelve 403s within a second would be a dense volley, a lower cap, and halve the rate.
    # Each follows a call of ours that left late a second earlier: the margin widens once.
    assert lim.current() == (pytest.approx(96), pytest.approx(0.96))
    assert client.zcard(late_key(lim.key)) == 0  # each late call explained one refusal
    assert client.hget(lim.key, "strikes") == b"0"


def test_late_calls_explain_only_as_many_403s_as_there_were_late_calls(
    client: redis.Redis,
) -> None:
    lim = limiter(client, LEARNING)
    _late_calls_then_refusals(lim, client, late=2, refused=12)
    # Two explained (the first widened the margin); the other ten are a dense volley the
    # service started on its own: a lower cap, halved.
    rate, margin = lim.current()
    assert margin == pytest.approx(0.96)
    assert rate == pytest.approx(48, rel=0.01)


def test_a_late_call_explains_only_the_refusal_a_second_after_it(client: redis.Redis) -> None:
    lim = limiter(client, LEARNING)
    sec, usec = client.time()
    base = sec * SECOND_US + usec - 5 * SECOND_US
    lim.note_late(Grant(waited=0.02, slot_us=base, late=0.02))
    lim.on_throttled(base + 3 * SECOND_US)  # three seconds on: not this late call's doing
    assert client.zcard(late_key(lim.key)) == 1  # not taken
    # Counted as the limiter always counted a jitter 403: a mild reaction and a strike.
    assert client.hget(lim.key, "strikes") == b"1"


def test_three_mild_reactions_our_late_calls_explain_are_no_lower_cap(
    client: redis.Redis,
) -> None:
    """As test_a_third_mild_reaction_in_a_row_is_a_lower_cap_and_cuts_fully, but each 403
    follows a call of ours that left late a second earlier: gentle cuts at most."""
    lim = limiter(
        client, Margin(forgive=0.0, start=0.98, most=0.99, least=0.9, step=0.02, regain=0.0)
    )

    def explained_403() -> None:
        sec, usec = client.time()
        refused = sec * SECOND_US + usec
        lim.note_late(Grant(waited=0.02, slot_us=refused - SECOND_US, late=0.02))
        lim.on_throttled(refused)

    explained_403()  # margin 0.96, no cut
    wait_until(lambda: _older_than(lim, "lowered_at", 0.25), 5, "the volley window to pass")
    explained_403()  # margin 0.94, gentle cut to 86.4
    assert lim.current()[0] == pytest.approx(86.4, rel=0.01)
    wait_until(lambda: _older_than(lim, "cut_at", 0.25), 5, "the volley window to pass")
    explained_403()  # still ours: a gentle cut again (to 77.8), never the halving (43.2)
    assert lim.current()[0] == pytest.approx(86.4 * 0.9, rel=0.02)
