"""Runtime knobs (QPS cap, latency, fault probabilities) and the fault drawn for each call.

One uniform draw per call walks the cumulative probabilities in :data:`FAULT_ORDER`, so with a
``--seed`` the sequence of faults is reproducible for a given sequence of calls. Knobs can be
changed while the emulator runs (``POST /__emulator__/config``), e.g. to start a 403 storm by
dropping ``qps`` mid-job.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any


class Fault(enum.Enum):
    RESET = "reset"  # abort the connection, no answer (not billed)
    GATEWAY_5XX = "gateway_5xx"  # HTTP 502/503 with an HTML or empty body (not billed)
    MALFORMED = "malformed"  # HTTP 200 with a non-JSON or truncated body (not billed)
    CODE_500 = "fault_500"  # Code 500 system exception (not billed)
    CODE_405 = "fault_405"  # Code 405 download timed out (not billed)
    SLOW = "slow"  # the normal answer, after slow_ms more (billed when it is a 200)


# Probability knob for each fault, in the order the single draw walks them.
FAULT_ORDER: tuple[tuple[str, Fault], ...] = (
    ("fault_reset", Fault.RESET),
    ("fault_gateway_5xx", Fault.GATEWAY_5XX),
    ("fault_malformed", Fault.MALFORMED),
    ("fault_500", Fault.CODE_500),
    ("fault_405", Fault.CODE_405),
    ("fault_slow", Fault.SLOW),
)


@dataclass(frozen=True)
class Knobs:
    """What can change at runtime. Probabilities are in [0, 1]; times in milliseconds."""

    qps: float = 100.0
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    slow_ms: float = 15_000.0
    fault_405: float = 0.0
    fault_500: float = 0.0
    fault_reset: float = 0.0
    fault_slow: float = 0.0
    fault_malformed: float = 0.0
    fault_gateway_5xx: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


_KNOB_NAMES = frozenset(f.name for f in fields(Knobs))


def updated_knobs(knobs: Knobs, changes: Mapping[str, Any]) -> Knobs:
    """A copy of ``knobs`` with ``changes`` applied; ValueError names a bad key or value."""
    unknown = sorted(set(changes) - _KNOB_NAMES)
    if unknown:
        raise ValueError(f"unknown knob(s) {unknown}; known: {sorted(_KNOB_NAMES)}")
    clean: dict[str, float] = {}
    for name, value in changes.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"knob {name} must be a number, got {value!r}")
        number = float(value)
        if number < 0:
            raise ValueError(f"knob {name} must not be negative, got {number}")
        if name.startswith("fault_") and number > 1:
            raise ValueError(f"knob {name} is a probability in [0, 1], got {number}")
        clean[name] = number
    return replace(knobs, **clean)


def choose_fault(knobs: Knobs, draw: float) -> Fault | None:
    """The fault for a call whose uniform draw in [0, 1) is ``draw``; None for a normal call."""
    edge = 0.0
    for name, fault in FAULT_ORDER:
        edge += float(getattr(knobs, name))
        if draw < edge:
            return fault
    return None
