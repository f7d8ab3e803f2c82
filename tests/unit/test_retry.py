"""Retry counts and full-jitter backoff: pure arithmetic, pinned exactly where it can be."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from worker.errors import REDIRECT, ModerationError, TransportError, error_for
from worker.retry import (
    DEFAULT_ATTEMPTS,
    LEASE_GRACE_S,
    Fail,
    Retry,
    RetryPolicy,
    backend_wait,
    backoff_delay,
    countdown,
    decide,
    decide_error,
    look_again_after,
)
from worker.settings import parse_per_code


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 8])
def test_backoff_stays_between_zero_and_the_doubling_ceiling(attempt: int) -> None:
    rng = random.Random(attempt)
    ceiling = 0.5 * 2 ** (attempt - 1)
    delays = [backoff_delay(attempt, 0.5, 1000.0, rng) for _ in range(2000)]
    assert all(0.0 <= d <= ceiling for d in delays)
    # the draws reach close to the ceiling, so the bound is the real one, not a smaller one
    assert max(delays) > 0.95 * ceiling


def test_backoff_ceiling_doubles_with_each_attempt() -> None:
    rng = random.Random(7)
    means = [sum(backoff_delay(a, 1.0, 1e9, rng) for _ in range(4000)) / 4000 for a in range(1, 7)]
    for earlier, later in zip(means, means[1:], strict=False):
        assert later / earlier == pytest.approx(2.0, rel=0.15)


def test_backoff_never_exceeds_the_cap_even_for_huge_attempts() -> None:
    rng = random.Random(1)
    for attempt in (10, 64, 1025, 10**6):
        delays = [backoff_delay(attempt, 0.5, 60.0, rng) for _ in range(500)]
        assert max(delays) <= 60.0
        assert max(delays) > 55.0


def test_backoff_is_roughly_uniform_over_its_range() -> None:
    rng = random.Random(42)
    n, bins = 20_000, 10
    counts = [0] * bins
    for _ in range(n):
        d = backoff_delay(4, 0.5, 60.0, rng)  # ceiling 4.0
        counts[min(bins - 1, int(d / 4.0 * bins))] += 1
    expected = n / bins
    chi2 = sum((c - expected) ** 2 / expected for c in counts)
    assert chi2 < 27.9  # 99.9th percentile of chi-square with 9 degrees of freedom
    assert all(abs(c - expected) < 0.1 * expected for c in counts)


def test_backoff_with_same_seed_repeats_exactly() -> None:
    a = [backoff_delay(3, 0.5, 60.0, random.Random(5)) for _ in range(3)]
    assert a[0] == a[1] == a[2]


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "fragment"),
    [
        (0, 0.5, 60.0, "attempt"),
        (-1, 0.5, 60.0, "attempt"),
        (1, 0.0, 60.0, "base"),
        (1, 0.5, 0.0, "cap"),
        (1, float("nan"), 60.0, "base"),
    ],
)
def test_backoff_rejects_nonsense_arguments(
    attempt: int, base: float, cap: float, fragment: str
) -> None:
    with pytest.raises(ValueError, match=fragment):
        backoff_delay(attempt, base, cap)


def test_policy_uses_per_code_attempts_and_falls_back_to_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=8, per_code={"405": 3, "403": 20})
    assert policy.attempts_for("405") == 3
    assert policy.attempts_for("403") == 20
    assert policy.attempts_for("500") == 8
    assert policy.attempts_for("transport") == 8


def test_policy_retries_until_the_attempt_count_is_used_up() -> None:
    policy = RetryPolicy(max_attempts=3, per_code={"405": 1})
    assert [policy.should_retry("500", n) for n in range(5)] == [True, True, True, False, False]
    assert policy.should_retry("405", 1) is False
    assert policy.should_retry("405", 0) is True


def test_policy_with_one_attempt_never_retries() -> None:
    assert RetryPolicy(max_attempts=1).should_retry("500", 1) is False


def test_policy_delay_is_the_full_jitter_backoff_of_its_base_and_cap() -> None:
    policy = RetryPolicy(base=0.25, cap=2.0)
    assert policy.delay(3, random.Random(9)) == backoff_delay(3, 0.25, 2.0, random.Random(9))
    assert all(policy.delay(20) <= 2.0 for _ in range(200))


def test_policy_keeps_a_private_copy_of_per_code() -> None:
    overrides = {"403": 20}
    policy = RetryPolicy(per_code=overrides)
    overrides["403"] = 1
    assert policy.attempts_for("403") == 20
    with pytest.raises(TypeError):
        policy.per_code["403"] = 2  # type: ignore[index]


def test_policies_with_equal_fields_are_equal() -> None:
    assert RetryPolicy(per_code={"403": 20}) == RetryPolicy(per_code={"403": 20})
    assert RetryPolicy(per_code={"403": 20}) != RetryPolicy(per_code={"403": 21})


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"per_code": {"403": 0}}, "403"),
        ({"base": -1.0}, "base"),
        ({"cap": 0.0}, "cap"),
    ],
)
def test_policy_rejects_invalid_fields(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_policy_negative_attempt_is_an_error() -> None:
    with pytest.raises(ValueError, match="attempt"):
        RetryPolicy().should_retry("500", -1)


def test_policy_from_settings_takes_attempts_base_and_cap() -> None:
    settings = SimpleNamespace(max_attempts=5, backoff_base=0.1, backoff_cap=9.0)
    policy = RetryPolicy.from_settings(settings, "403=20")  # type: ignore[arg-type]
    assert policy == RetryPolicy(max_attempts=5, per_code={"403": 20}, base=0.1, cap=9.0)


def test_parse_per_code_reads_pairs_and_tolerates_blanks() -> None:
    assert parse_per_code("403=20,405=3") == {"403": 20, "405": 3}
    assert parse_per_code(" 403 = 20 , transport=4, ") == {"403": 20, "transport": 4}
    assert parse_per_code("") == {}


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("403", "'403' has no '='"),
        ("403=20,405", "'405' has no '='"),
        ("=3", "'' is not a retry code"),
        ("4 03=3", "'4 03' is not a retry code"),
        ("403=many", "'many' is not a whole number"),
        ("403=2.5", "'2.5' is not a whole number"),
        ("403=0", "'403=0': attempts must be at least 1"),
        ("403=2,403=3", "given twice"),
    ],
)
def test_parse_per_code_names_the_bad_part(spec: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_per_code(spec)


# --- the decision after a failed attempt -------------------------------------------------------


def test_a_gateway_502_page_counts_under_500_and_obeys_its_per_code_limit() -> None:
    """The gateway's HTML 502 arrives as code "HTTP 502": keyed without the status it would get
    IMGMOD_MAX_ATTEMPTS (8) instead of the 500=1 the operator set."""
    policy = RetryPolicy(max_attempts=8, per_code={"500": 1})
    assert decide("HTTP 502", 502, 1, policy) == Fail("500", exhausted=True)
    assert decide("HTTP 503", 503, 1, policy) == Fail("500", exhausted=True)
    assert isinstance(decide("HTTP 502", 502, 1, RetryPolicy(max_attempts=8)), Retry)


def test_a_429_with_an_unknown_code_counts_under_403() -> None:
    policy = RetryPolicy(max_attempts=8, per_code={"403": 2})
    assert decide("Foo.Bar", 429, 1, policy).key == "403"
    assert isinstance(decide("Foo.Bar", 429, 1, policy), Retry)
    assert decide("Foo.Bar", 429, 2, policy) == Fail("403", exhausted=True)


def test_decide_error_uses_the_errors_http_status() -> None:
    policy = RetryPolicy(max_attempts=8, per_code={"500": 1})
    gateway_page = error_for("HTTP 502", "<html>Bad Gateway</html>", None, 502)
    assert decide_error(gateway_page, 1, policy) == Fail("500", exhausted=True)


def test_a_404_is_retried_once_by_default_after_a_short_delay() -> None:
    policy = RetryPolicy(max_attempts=8, base=0.5, cap=60.0)
    first = decide(404, 200, 1, policy, random.Random(3))
    assert isinstance(first, Retry) and first.key == "404"
    assert 0.0 <= first.delay <= 0.5  # the first backoff step: at most IMGMOD_BACKOFF_BASE
    assert decide(404, 200, 2, policy) == Fail("404", exhausted=True)


def test_the_404_allowance_is_configurable_and_never_above_max_attempts() -> None:
    assert decide(404, 200, 1, RetryPolicy(per_code=parse_per_code("404=1"))) == Fail(
        "404", exhausted=True
    )
    assert isinstance(decide(404, 200, 3, RetryPolicy(per_code={"404": 4})), Retry)
    assert decide(404, 200, 1, RetryPolicy(max_attempts=1)) == Fail("404", exhausted=True)
    assert RetryPolicy().attempts_for("404") == DEFAULT_ATTEMPTS["404"] == 2


@pytest.mark.parametrize(
    "code", [400, 401, 402, 406, 407, 408, "SignatureDoesNotMatch", "redirect"]
)
def test_terminal_codes_fail_at_once_whatever_the_policy(code: int | str) -> None:
    policy = RetryPolicy(max_attempts=50, per_code={str(code): 50})
    decision = decide(code, 200, 1, policy)
    assert isinstance(decision, Fail) and decision.exhausted is False


@pytest.mark.parametrize(
    ("code", "status", "key"),
    [(403, 200, "403"), (405, 200, "405"), (500, 200, "500"), (None, None, "transport")],
)
def test_retryable_codes_retry_until_their_attempts_are_used(
    code: int | None, status: int | None, key: str
) -> None:
    policy = RetryPolicy(max_attempts=3)
    decisions = [decide(code, status, n, policy) for n in (1, 2, 3)]
    assert [type(d) for d in decisions] == [Retry, Retry, Fail]
    assert {d.key for d in decisions} == {key}


def test_a_success_needs_no_decision() -> None:
    with pytest.raises(ValueError, match="success"):
        decide(200, 200, 1, RetryPolicy())


# --- the task's decision table ------------------------------------------------------------------
# What worker.tasks does after each kind of failed call, decided here without a worker: the
# errors are the ones ModerationClient raises (error_for for answers, TransportError for none).


@pytest.mark.parametrize(
    ("error", "attempts", "decision"),
    [
        (error_for(403, "throttled", "r", 200), 1, Retry),
        (error_for("Throttling.User", "gateway", None, 429), 1, Retry),
        (error_for(500, "boom", "r", 200), 1, Retry),
        (error_for("HTTP 502", "gateway error page", None, 502), 1, Retry),
        (TransportError("timeout", "no answer within the call deadline"), 1, Retry),
        (TransportError("connection", "refused"), 1, Retry),
        (error_for("SignatureNonceUsed", "replayed", None, 400), 1, Retry),
        (error_for(404, "not found", "r", 200), 1, Retry),
        (error_for(404, "not found", "r", 200), 2, Fail),
        (error_for(405, "download timeout", "r", 200), 8, Fail),
        (error_for(400, "empty", "r", 200), 1, Fail),
        (error_for(406, "too large", "r", 200), 1, Fail),
        (error_for(408, "no permission", "r", 200), 1, Fail),
        (error_for("SignatureDoesNotMatch", "bad", None, 400), 1, Fail),
        (error_for(REDIRECT, "HTTP 302 to https://elsewhere", None, 302), 1, Fail),
        (error_for(999, "unknown", "r", 200), 1, Fail),
    ],
)
def test_the_task_retries_exactly_the_retryable_errors_within_their_attempts(
    error: ModerationError, attempts: int, decision: type
) -> None:
    made = decide_error(error, attempts, RetryPolicy(max_attempts=8), random.Random(1))
    assert type(made) is decision
    if isinstance(made, Fail):
        assert made.exhausted is error.retryable  # a final code fails at once, never "exhausted"


def test_a_retry_waits_the_policys_backoff_for_the_attempts_made() -> None:
    policy = RetryPolicy(base=2.0, cap=60.0)
    made = decide_error(error_for(500, "boom", None, 200), 3, policy, random.Random(5))
    assert made == Retry("500", policy.delay(3, random.Random(5)))
    assert 0.0 <= made.delay <= 8.0


def test_a_backend_outage_waits_one_second_doubling_to_thirty() -> None:
    rng = random.Random(3)
    first = [backend_wait(0, rng) for _ in range(500)]
    later = [backend_wait(20, rng) for _ in range(500)]
    assert max(first) <= 1.0 and max(later) <= 30.0
    assert max(later) > 25.0  # the ceiling really grew to the cap


def test_a_row_leased_elsewhere_is_looked_at_again_just_after_its_lease() -> None:
    assert look_again_after(12.5) == 12.5 + LEASE_GRACE_S
    assert look_again_after(0.0) == LEASE_GRACE_S


@pytest.mark.parametrize(
    ("delay", "visibility", "expected"),
    [(5.0, 600, 5.0), (500.0, 600, 300.0), (45.0, 60, 30.0), (10.0, 1, 1.0)],
)
def test_a_retry_countdown_never_passes_half_the_visibility_timeout(
    delay: float, visibility: int, expected: float
) -> None:
    assert countdown(delay, visibility) == expected
