"""The learned margin of the shared limiter (:mod:`worker.limits`): the share of the cap its
permits aim at. Kept in Redis with the limiter's state; here only its bounds and steps."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Margin:
    """The share of the cap the pacing aims at, learned from the service's 403s.

    Permits are evenly spaced, yet calls reach the service late by varying amounts, so a
    second the service counts may hold one too many; how much room that needs depends on the
    network and the callers' load, so it is measured: the margin starts at ``start``; a 403 at
    the full rate (jitter, not a lower cap) lowers it by ``step`` to no less than ``least``
    (the first such 403 in 5 s does only that, no rate cut); each second without one regains
    ``regain``, up to ``most``. At the defaults one jitter event in 20 s (a few 403s: ~0.2 % of
    the calls at 100/s) holds it still. Kept in the limiter's hash: every host learns from it.

    A lone 403 at the full rate, with no 403 forgiven and no step taken in the ``forgive``
    seconds before it, is forgiven: it moves nothing. Why: a step costs ``step`` of the cap
    until ``step / regain`` seconds of quiet win it back (0.005 x 100/s for 20 s: ten calls'
    worth of pacing), the 403 itself one call: on this project's 2-core box, 3,000-image jobs
    with one stray 403 read 0.965-0.969 of the cap, those without 0.971-0.973. A second 403
    within ``forgive`` s (or the second of a burst) still takes the step, so jitter that
    recurs is learned as before, and a lower cap is found one 403 later. At most one 403 in
    ``forgive`` s goes unlearned: 0.05 % of the calls at 100/s.

    The start, 0.99, is where a long run's margin spends most of its time anyway; with lone
    403s forgiven, a job no longer pays 20 s for the first one. Over 3,000 images on
    PostgreSQL, alternated, 0.985 read 0.971-0.972 of the cap and 0.99 read 0.971-0.977
    (0.974 or more in six of seven), at 0.03-0.07 % of the calls throttled
    (``bench/RESULTS.md``, twelfth session).
    """

    start: float = 0.99
    most: float = 0.995
    least: float = 0.95
    step: float = 0.005
    regain: float = 0.00025
    forgive: float = 20.0

    def __post_init__(self) -> None:
        if not 0 < self.least <= self.start <= self.most <= 1:
            raise ValueError(
                f"margin least={self.least!r}, start={self.start!r}, most={self.most!r}: "
                "need 0 < least <= start <= most <= 1"
            )
        if self.step < 0 or self.regain < 0 or self.forgive < 0:
            raise ValueError("margin step, regain and forgive must not be negative")

    @classmethod
    def fixed(cls, share: float) -> Margin:
        """A margin that never moves (``share`` of the cap; 1.0: the cap itself)."""
        return cls(start=share, most=share, least=share, step=0.0, regain=0.0, forgive=0.0)

    def args(self) -> tuple[float, float, float, float]:
        """The script arguments: start, most, least, regain per second."""
        return (self.start, self.most, self.least, self.regain)


NO_MARGIN = Margin.fixed(1.0)
