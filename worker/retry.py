"""How often and how long to wait before calling the API again: pure, no clocks, no I/O.

Delays use "full jitter" (a uniform draw between zero and an exponentially growing ceiling):
many threads that failed together do not come back together, which matters most for 403
(throttled) and 500, where a synchronised retry wave would simply fail again.

Attempt counts are per retry code, the strings produced by ``worker.errors.retry_code``
("403", "405", "500", "transport", ...): a throttled call is cheap to retry many times, a
download timeout (405) usually repeats and deserves only a few, and a 404 gets one retry by
default (:data:`DEFAULT_ATTEMPTS`). :func:`decide` turns one failed attempt into the next step.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from worker.errors import ModerationError, Outcome, classify, retry_code
from worker.settings import Settings, parse_per_code

# 2.0 ** 1024 overflows a float; any ceiling this large is already past every sane cap.
_MAX_EXPONENT = 1000
# Attempts of retry codes that differ from IMGMOD_MAX_ATTEMPTS unless IMGMOD_RETRY_PER_CODE
# names them. 404: one retry, for the transient 404s of archive CDNs (the vendor: "check the
# image URL or retry"); a URL that is really gone costs one more unbilled call, not seven.
DEFAULT_ATTEMPTS: Mapping[str, int] = MappingProxyType({"404": 2})


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after ``attempt`` failed attempts, drawn with full jitter:
    ``uniform(0, min(cap, base * 2**(attempt-1)))``.

    ``attempt`` starts at 1 (the wait after the first failure is at most ``base``).
    """
    if attempt < 1:
        raise ValueError(f"attempt={attempt!r} must be at least 1")
    if not base > 0:
        raise ValueError(f"base={base!r} must be positive")
    if not cap > 0:
        raise ValueError(f"cap={cap!r} must be positive")
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, _MAX_EXPONENT))
    return (rng or random).uniform(0.0, ceiling)


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts each retry code gets, and the backoff between them.

    ``max_attempts`` counts every attempt, the first included: 8 means one call and up to seven
    retries. ``per_code`` overrides it for single codes, e.g. ``{"405": 3, "403": 20}``; codes
    it does not name get :data:`DEFAULT_ATTEMPTS` (never more than ``max_attempts``) or
    ``max_attempts``.
    """

    max_attempts: int = 8
    per_code: Mapping[str, int] = field(default_factory=dict)
    base: float = 0.5
    cap: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts={self.max_attempts!r} must be at least 1")
        for code, attempts in self.per_code.items():
            if attempts < 1:
                raise ValueError(f"per_code[{code!r}]={attempts!r} must be at least 1")
        if not self.base > 0:
            raise ValueError(f"base={self.base!r} must be positive")
        if not self.cap > 0:
            raise ValueError(f"cap={self.cap!r} must be positive")
        # A private read-only copy: a policy shared by threads cannot change under them.
        object.__setattr__(self, "per_code", MappingProxyType(dict(self.per_code)))

    @classmethod
    def from_settings(
        cls, settings: Settings, per_code: Mapping[str, int] | str | None = None
    ) -> RetryPolicy:
        """The policy of ``IMGMOD_MAX_ATTEMPTS``, ``IMGMOD_BACKOFF_BASE`` and ``_CAP``, with the
        per-code attempts of ``IMGMOD_RETRY_PER_CODE`` unless ``per_code`` is given."""
        if per_code is None:
            per_code = settings.retry_per_code
        overrides = parse_per_code(per_code) if isinstance(per_code, str) else per_code
        return cls(
            max_attempts=settings.max_attempts,
            per_code=overrides,
            base=settings.backoff_base,
            cap=settings.backoff_cap,
        )

    def attempts_for(self, code_key: str) -> int:
        """Total attempts allowed for a failure with this retry code."""
        if code_key in self.per_code:
            return self.per_code[code_key]
        return min(DEFAULT_ATTEMPTS.get(code_key, self.max_attempts), self.max_attempts)

    def should_retry(self, code_key: str, attempt: int) -> bool:
        """Whether to try again after ``attempt`` attempts, the last failing with ``code_key``."""
        if attempt < 0:
            raise ValueError(f"attempt={attempt!r} must not be negative")
        return attempt < self.attempts_for(code_key)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after ``attempt`` failed attempts (full jitter, see backoff_delay)."""
        return backoff_delay(attempt, self.base, self.cap, rng)


@dataclass(frozen=True)
class Retry:
    """Call again after ``delay`` seconds; the attempt counts under retry code ``key``."""

    key: str
    delay: float


@dataclass(frozen=True)
class Fail:
    """Give up: the code is final (``exhausted`` False) or its attempts are used up (True)."""

    key: str
    exhausted: bool


def decide(
    code: int | str | None,
    http_status: int | None,
    attempts: int,
    policy: RetryPolicy,
    rng: random.Random | None = None,
) -> Retry | Fail:
    """What to do after ``attempts`` attempts, the last answered with ``code`` and ``http_status``.

    The HTTP status matters: a gateway's 502 page (code ``"HTTP 502"``) counts under ``"500"``
    and a 429 under ``"403"``, so IMGMOD_RETRY_PER_CODE applies to them. Raises ValueError for
    a success, which needs no decision.
    """
    outcome = classify(code, http_status)
    if outcome is Outcome.SUCCESS:
        raise ValueError(f"code {code!r} is a success: there is nothing to retry")
    key = retry_code(code, http_status)
    if outcome is Outcome.FAIL:
        return Fail(key, exhausted=False)
    if not policy.should_retry(key, attempts):
        return Fail(key, exhausted=True)
    return Retry(key, policy.delay(max(attempts, 1), rng))


def decide_error(
    error: ModerationError, attempts: int, policy: RetryPolicy, rng: random.Random | None = None
) -> Retry | Fail:
    """:func:`decide` for a raised error, with the code and HTTP status it carries."""
    return decide(error.code, error.http_status, attempts, policy, rng)


# A backend the task needs is away (the database for a claim, Redis for a permit or a parked
# answer): nothing was billed, so the message comes back after 1 s, doubling to 30 s.
_BACKEND_BASE_S = 1.0
_BACKEND_CAP_S = 30.0
# Past another worker's lease end before looking at its row again (clock skew, its commit).
LEASE_GRACE_S = 1.0


class Later(Exception):  # noqa: N818 - an outcome, not an error
    """This item is to be tried again in about ``delay`` seconds (its row was handed back, or
    is leased elsewhere): raised by one item's attempt, carried out by the task, which knows
    whether the item goes back alone or with its message (:func:`worker.tasks.moderate`)."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay)
        self.delay = delay


def backend_wait(retries: int, rng: random.Random | None = None) -> float:
    """Seconds before a message whose backend was away comes back, after ``retries`` earlier
    redeliveries of it (Celery's ``request.retries``): full jitter, 1 s doubling to 30 s."""
    return backoff_delay(retries + 1, _BACKEND_BASE_S, _BACKEND_CAP_S, rng)


def look_again_after(lease_left: float) -> float:
    """Seconds before looking again at a row another worker holds for ``lease_left`` more.

    Dropping the message would strand the row if that worker is dead (a message restored a
    moment before the dead worker's lease ran out); once the lease is over, a live owner has
    closed the row and the look is a no-op.
    """
    return lease_left + LEASE_GRACE_S


def countdown(delay: float, visibility_timeout: float) -> float:
    """The countdown of a retry asked for after ``delay`` s: never past half the visibility
    timeout.

    The retry message waits in the worker unacknowledged; held past the broker's visibility
    timeout, kombu would restore it to the queue while it is still held, and each restore would
    add one more copy. Waiting less than asked only costs an early look.
    """
    return min(delay, max(1.0, visibility_timeout / 2))
