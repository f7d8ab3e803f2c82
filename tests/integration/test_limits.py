"""The shared rate limiter against a real Redis: many processes and threads, one cap.

Permits are judged by the Redis server time each was booked for (``Grant.slot_us``): that is the
schedule the limiter promises, free of client-side scheduling noise.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from worker.limits import LimiterTimeout, LimiterUnavailable, RateLimiter
from worker.permits import Booking
from worker.processes import PrivateRedis, free_port, wait_until

SECOND_US = 1_000_000


def max_in_window(stamps_us: list[int], window_us: int = SECOND_US) -> int:
    """Most stamps inside any half-open window ``[a, a + window_us)``."""
    stamps = sorted(stamps_us)
    best, lo = 0, 0
    for hi, stamp in enumerate(stamps):
        while stamp - stamps[lo] >= window_us:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def key() -> str:
    return f"test:limiter:{uuid.uuid4().hex}"


def hammer(url: str, key: str, qps: float, threads: int, control: str) -> list[tuple[int, float]]:
    """One worker process: ``threads`` threads acquire until the parent's stop time.

    Returns (server slot in µs, client time when acquire returned) per permit.
    """
    c = redis.Redis.from_url(url)
    limiter = RateLimiter(c, key=key, qps=qps)
    c.incr(f"{control}:ready")
    started = wait_until(lambda: c.get(f"{control}:stop"), 60, "the start signal", interval=0.01)
    stop = float(started or 0)
    grants: list[tuple[int, float]] = []
    lock = threading.Lock()

    def run() -> None:
        while time.time() < stop:
            grant = limiter.acquire_grant(timeout=10)
            returned = time.time()
            with lock:
                grants.append((grant.slot_us, returned))

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    c.close()
    return grants


@pytest.mark.service
def test_processes_and_threads_together_never_exceed_the_cap_in_any_second(
    redis_url: str, client: redis.Redis, key: str
) -> None:
    qps, processes, threads, duration = 50, 3, 32, 3.0
    control = f"{key}:control"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes) as pool:
        results = [
            pool.apply_async(hammer, (redis_url, key, qps, threads, control))
            for _ in range(processes)
        ]
        wait_until(
            lambda: int(client.get(f"{control}:ready") or 0) == processes,
            60,
            "workers ready",
            interval=0.01,
        )
        client.set(f"{control}:stop", repr(time.time() + duration))
        per_process = [r.get(timeout=60) for r in results]

    assert all(len(grants) > 10 for grants in per_process), [len(g) for g in per_process]
    slots = sorted(slot for grants in per_process for slot, _ in grants)
    gaps = [b - a for a, b in zip(slots, slots[1:], strict=False)]
    span = (slots[-1] - slots[0]) / SECOND_US
    rate = (len(slots) - 1) / span
    assert span > duration - 0.5
    assert rate == pytest.approx(qps, rel=0.02)
    assert min(gaps) >= SECOND_US // qps  # the emission interval is never cut short
    assert max_in_window(slots) <= qps
    # Acquire returns at the booked slot: client-side stamps show only scheduling noise.
    returned = [int(t * SECOND_US) for grants in per_process for _, t in grants]
    assert max_in_window(returned) <= qps + 2


@pytest.mark.service
def test_a_throttle_signal_slows_every_limiter_on_the_key(client: redis.Redis, key: str) -> None:
    a = RateLimiter(client, key=key, qps=50, increase_per_second=0.001, near_cap_factor=0.5)
    b = RateLimiter(
        redis.Redis(connection_pool=client.connection_pool),
        key=key,
        qps=50,
        increase_per_second=0.001,
        near_cap_factor=0.5,
    )
    assert b.current_rate() == pytest.approx(50)
    a.on_throttled()
    assert b.current_rate() == pytest.approx(25, abs=0.01)
    # a volley of 403s from many threads within the window is one signal
    for _ in range(5):
        a.on_throttled()
        b.on_throttled()
    assert a.current_rate() == pytest.approx(25, abs=0.01)
    slots = [b.acquire_grant(timeout=5).slot_us for _ in range(5)]
    gaps = [y - x for x, y in zip(slots, slots[1:], strict=False)]
    assert all(SECOND_US // 25 <= gap < SECOND_US // 25 + 5_000 for gap in gaps), gaps


@pytest.mark.service
def test_the_rate_recovers_to_the_configured_qps_after_a_cut(client: redis.Redis, key: str) -> None:
    limiter = RateLimiter(
        client,
        key=key,
        qps=50,
        increase_per_second=50,
        recover_fraction=0,
        decrease_window=0.2,
        near_cap_factor=0.5,
    )
    other = RateLimiter(client, key=key, qps=50, increase_per_second=50, recover_fraction=0)
    limiter.on_throttled()
    cut_at = time.monotonic()
    assert other.current_rate() < 30
    for _ in range(100):
        other.on_success()  # free: no round trip
    assert other.round_trips == 1
    wait_until(lambda: other.current_rate() == pytest.approx(50), 5, "recovery to 50/s")
    assert time.monotonic() - cut_at >= 0.4  # 25/s back to 50/s at +50/s takes 0.5 s
    # once the window has passed, a new 403 is a new signal
    limiter.on_throttled()
    assert other.current_rate() < 30


@pytest.mark.service
def test_recovery_after_a_deep_cut_is_bounded_by_the_rate_the_cut_left(
    client: redis.Redis, key: str
) -> None:
    """Against a real cap of 10/s with qps=100, recovering at qps/10 per second would double
    the rate each second; 10% of the cut rate per second approaches the cap gently."""
    limiter = RateLimiter(client, key=key, qps=100, min_qps=5, decrease_window=0)
    for _ in range(4):
        limiter.on_throttled()  # 100 -> 90 (near the cap: gentle) -> 45 -> 22.5 -> 11.25
    cut = limiter.current_rate()
    assert cut == pytest.approx(11.25, abs=0.1)
    wait_until(lambda: limiter.current_rate() > cut + 0.3, 2, "some recovery")
    assert limiter.current_rate() < cut * 1.25  # at most 10% of the cut rate per second


@pytest.mark.service
def test_a_first_403_at_the_cap_cuts_gently_and_a_second_cuts_hard(
    client: redis.Redis, key: str
) -> None:
    """At the cap a stray 403 is timing jitter: 10% off; below it, a real lower cap: half."""
    limiter = RateLimiter(client, key=key, qps=100, decrease_window=0, increase_per_second=0.001)
    limiter.on_throttled()
    assert limiter.current_rate() == pytest.approx(90, abs=0.01)
    limiter.on_throttled()
    assert limiter.current_rate() == pytest.approx(45, abs=0.01)


@pytest.mark.service
def test_repeated_cuts_stop_at_the_floor(client: redis.Redis, key: str) -> None:
    limiter = RateLimiter(
        client, key=key, qps=100, min_qps=20, decrease_window=0, increase_per_second=0.001
    )
    for _ in range(6):
        limiter.on_throttled()
    assert limiter.current_rate() == pytest.approx(20, abs=0.01)


@pytest.mark.service
def test_a_changed_qps_takes_effect_without_flushing_redis(client: redis.Redis, key: str) -> None:
    def gaps(limiter: RateLimiter, n: int) -> list[int]:
        slots = [limiter.acquire_grant(timeout=5).slot_us for _ in range(n)]
        return [y - x for x, y in zip(slots, slots[1:], strict=False)]

    slow = gaps(RateLimiter(client, key=key, qps=10), 3)
    assert all(100_000 <= g < 105_000 for g in slow), slow
    raised = gaps(RateLimiter(client, key=key, qps=100), 6)
    assert all(10_000 <= g < 15_000 for g in raised), raised
    lowered = gaps(RateLimiter(client, key=key, qps=20), 4)
    assert all(50_000 <= g < 55_000 for g in lowered), lowered


@pytest.mark.service
def test_permits_are_spaced_by_the_interval_rounded_up_to_a_microsecond(
    client: redis.Redis, key: str
) -> None:
    # 1e6 / 300.3 = 3330.003 µs: rounding up keeps any second at or under ceil(qps) permits
    limiter = RateLimiter(client, key=key, qps=300.3)
    slots = [limiter.acquire_grant(timeout=5).slot_us for _ in range(20)]
    assert min(y - x for x, y in zip(slots, slots[1:], strict=False)) == 3331


@pytest.mark.service
def test_a_cut_rate_is_capped_by_a_lowered_qps_and_recovers_to_a_raised_one(
    client: redis.Redis, key: str
) -> None:
    RateLimiter(client, key=key, qps=100, increase_per_second=0.001).on_throttled()
    assert RateLimiter(client, key=key, qps=30).current_rate() == pytest.approx(30)
    raised = RateLimiter(client, key=key, qps=200, increase_per_second=1000, recover_fraction=0)
    wait_until(lambda: raised.current_rate() == pytest.approx(200), 3, "recovery to 200/s")


@pytest.mark.service
def test_try_acquire_takes_nothing_when_it_says_wait(client: redis.Redis, key: str) -> None:
    limiter = RateLimiter(client, key=key, qps=2)
    assert limiter.try_acquire() == 0.0
    wait = limiter.try_acquire()
    assert 0.3 < wait <= 0.5
    assert 0.3 < limiter.try_acquire() <= wait  # the refusal booked no slot
    wait_until(lambda: limiter.try_acquire() == 0.0, 2, "the next permit")


@pytest.mark.service
def test_burst_admits_that_many_permits_at_once_then_spaces_them(
    client: redis.Redis, key: str
) -> None:
    limiter = RateLimiter(client, key=key, qps=5, burst=2)
    assert [limiter.try_acquire() for _ in range(2)] == [0.0, 0.0]
    assert limiter.try_acquire() > 0.1


@pytest.mark.service
def test_acquire_times_out_at_once_when_the_next_permit_is_too_far(
    client: redis.Redis, key: str
) -> None:
    limiter = RateLimiter(client, key=key, qps=0.5)
    assert limiter.acquire(timeout=1) < 0.1
    start = time.monotonic()
    with pytest.raises(LimiterTimeout, match="within 0.5 s"):
        limiter.acquire(timeout=0.5)
    assert time.monotonic() - start < 0.2  # no point sleeping out a hopeless wait
    assert limiter.try_acquire() > 1.5  # the timed-out call took no permit


@pytest.mark.service
def test_redis_down_is_a_clear_error_not_a_permit() -> None:
    port = free_port()
    limiter = RateLimiter.from_url(f"redis://:s3cret-pass@127.0.0.1:{port}/0", qps=10)
    start = time.monotonic()
    with pytest.raises(LimiterUnavailable, match=f"127.0.0.1:{port}") as excinfo:
        limiter.acquire(timeout=5)
    assert time.monotonic() - start < 3
    assert "s3cret" not in str(excinfo.value)
    for call in (limiter.try_acquire, limiter.on_throttled, limiter.current_rate):
        with pytest.raises(LimiterUnavailable, match="no permit granted"):
            call()


@pytest.mark.service
def test_limiter_survives_a_redis_restart(broker: PrivateRedis) -> None:
    limiter = RateLimiter.from_url(broker.url, key="imgmod:limiter", qps=20)
    limiter.acquire(timeout=1)
    limiter.on_throttled()
    broker.stop()
    with pytest.raises(LimiterUnavailable):
        limiter.acquire(timeout=1)
    broker.start()  # same port, empty: no script cache, no keys
    assert limiter.acquire(timeout=2) < 0.1
    assert limiter.current_rate() == pytest.approx(20)


@pytest.mark.service
def test_a_booking_holds_its_slot_without_sleeping_and_waits_only_what_is_left(
    client: redis.Redis, key: str
) -> None:
    """``book`` returns at once with a slot up to a second ahead; a caller that spends the
    wait preparing its call sleeps only the rest (worker.attempt signs meanwhile)."""
    limiter = RateLimiter(client, key=key, qps=4)
    limiter.acquire(timeout=1)  # the next slot is now ~250 ms away
    asked = time.monotonic()
    booking = limiter.book(timeout=1)
    assert time.monotonic() - asked < 0.1  # booked, not slept
    assert 0.15 < booking.due - asked < 0.3  # the slot ~250 ms after the first, plus a trip
    assert limiter.try_acquire() > 0.3  # the slot is taken: the next is ~500 ms away
    wait_until(lambda: time.monotonic() >= booking.due - 0.05, 2, "most of the wait to pass")
    waited_from = time.monotonic()
    grant = booking.wait()
    assert time.monotonic() >= booking.due
    assert time.monotonic() - waited_from < 0.1  # only what was left
    assert grant.slot_us == booking.slot_us and grant.waited >= booking.due - asked


@pytest.mark.service
def test_a_booking_past_its_slot_does_not_sleep(client: redis.Redis, key: str) -> None:
    booking = RateLimiter(client, key=key, qps=100).book(timeout=1)
    wait_until(lambda: time.monotonic() > booking.due + 0.05, 2, "the slot to pass")
    started = time.monotonic()
    booking.wait()
    assert time.monotonic() - started < 0.02


@pytest.mark.service
def test_a_warm_start_begins_below_the_rate_and_recovers_to_it(
    client: redis.Redis, key: str
) -> None:
    limiter = RateLimiter(client, key=key, qps=100, warm_start=0.8)
    assert limiter.current_rate() == pytest.approx(100)  # nothing booked yet: no schedule
    slots = [limiter.acquire_grant(timeout=5).slot_us for _ in range(5)]
    assert min(y - x for x, y in zip(slots, slots[1:], strict=False)) >= SECOND_US // 82
    assert 80 <= limiter.current_rate() < 85
    limiter.on_throttled()  # within the start's volley window: nothing changes
    assert 80 <= limiter.current_rate() < 85
    # 10 % of the rate the start left (8/s) a second: back to 100 in about 2.5 s.
    wait_until(lambda: limiter.current_rate() == pytest.approx(100), 5, "the ramp to end")
    again = RateLimiter(client, key=key, qps=100, warm_start=0.8)
    again.acquire(timeout=1)  # the schedule exists now: no second warm start
    assert again.current_rate() == pytest.approx(100)


@pytest.mark.service
def test_a_warm_start_outside_zero_to_one_is_refused(client: redis.Redis) -> None:
    for bad in (0.0, 1.5, -1.0):
        with pytest.raises(ValueError, match="warm_start"):
            RateLimiter(client, qps=100, warm_start=bad)


def _book_together(limiter: RateLimiter, threads: int) -> list[object]:
    """``threads`` threads call ``limiter.book()`` at once; each one's booking or error."""
    start = threading.Barrier(threads)
    got: list[object] = [None] * threads

    def ask(i: int) -> None:
        start.wait()
        try:
            got[i] = limiter.book()
        except Exception as exc:  # noqa: BLE001 - the test reads what each thread got
            got[i] = exc

    pool = [threading.Thread(target=ask, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in pool), "a thread is still waiting for its permit"
    return got


@pytest.mark.service
def test_threads_asking_together_are_booked_together_each_slot_its_own(
    client: redis.Redis, key: str
) -> None:
    """A process's waiting threads are booked for in few script runs (worker.permit_queue),
    and each gets its own slot, one interval after the last, as one run each would give."""
    limiter = RateLimiter(client, key=key, qps=100)
    got = _book_together(limiter, 40)
    slots = sorted(b.slot_us for b in got if isinstance(b, Booking))
    assert len(slots) == 40, got
    assert min(b - a for a, b in zip(slots, slots[1:], strict=False)) >= 10_000  # 1e6 / 100
    assert max_in_window(slots) <= 100
    assert limiter.round_trips < 20  # one run each: 40


@pytest.mark.service
def test_one_run_books_no_permit_beyond_the_horizon(client: redis.Redis, key: str) -> None:
    """Ten permits asked at 10/s with 250 ms left to wait: the 0, 100 and 200 ms slots only."""
    limiter = RateLimiter(client, key=key, qps=10)
    run = limiter._run_acquire(250_000, 10)
    assert (run.booked, run.wait_us, run.interval_us) == (3, 0, 100_000)
    nxt = limiter._run_acquire(0, 1)  # the schedule moved by the three: the next is 300 ms on
    assert nxt.booked == 0 and 250_000 < nxt.wait_us <= 300_000


def test_redis_down_fails_every_thread_asking_together_with_a_clear_error() -> None:
    """Threads queued behind one script run that fails each raise their own error, promptly:
    none is left waiting, and none gets a permit."""
    limiter = RateLimiter.from_url(f"redis://127.0.0.1:{free_port()}/0", qps=10)
    started = time.monotonic()
    got = _book_together(limiter, 8)
    assert all(isinstance(e, LimiterUnavailable) for e in got), got
    assert len({id(e) for e in got}) == 8  # each thread its own exception object
    assert time.monotonic() - started < 10
