"""Browse's filters, read from the URL's query (so a link shares the view), pure.

``?job=NAME&state=done&decision=review&label=porn*&min=80&max=100&risk=high&since=2026-12-01
&until=2026-12-06&after=1200``; a list value may repeat or be comma-separated. A bad value is
one message naming the parameter; the page shows it and applies the other filters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from urllib.parse import urlencode

from worker.store.browse import BrowseFilter
from worker.store.schema import DECISIONS, STATES

RISK_LEVELS = ("high", "medium", "low", "none")
PARAMS = ("job", "state", "decision", "label", "min", "max", "risk", "since", "until")


@dataclass(frozen=True)
class View:
    """The filters as given (``query``: to rebuild links) and as the store reads them."""

    job: str | None
    flt: BrowseFilter
    after: int = 0
    query: dict[str, str] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    def link(self, **changes: str | int | None) -> str:
        """This view's query string with ``changes`` (None removes a parameter)."""
        query = dict(self.query)
        for name, value in changes.items():
            if value is None:
                query.pop(name, None)
            else:
                query[name] = str(value)
        return urlencode(query)


def _list(
    values: Sequence[str], allowed: Sequence[str], name: str, problems: list[str]
) -> tuple[str, ...]:
    found: list[str] = []
    for value in values:
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            if part not in allowed:
                problems.append(f"{name}={part!r} is not one of {', '.join(allowed)}")
            elif part not in found:
                found.append(part)
    return tuple(found)


def _confidence(raw: str | None, name: str, problems: list[str]) -> float | None:
    if raw is None or not raw.strip():
        return None
    try:
        value = float(raw)
    except ValueError:
        problems.append(f"{name}={raw!r} is not a number (a confidence, 0 to 100)")
        return None
    if not 0 <= value <= 100:
        problems.append(f"{name}={raw!r} is outside 0 to 100")
        return None
    return value


def _day(raw: str | None, name: str, problems: list[str]) -> datetime | None:
    if raw is None or not raw.strip():
        return None
    try:
        day = date.fromisoformat(raw.strip())
    except ValueError:
        problems.append(f"{name}={raw!r} is not a date (YYYY-MM-DD)")
        return None
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


def parse_view(params: Mapping[str, Sequence[str]]) -> View:
    """The view a query asks for; ``params`` maps a parameter to all its values."""
    problems: list[str] = []

    def one(name: str) -> str | None:
        values = [v for v in params.get(name, ()) if v.strip()]
        return values[-1].strip() if values else None

    low = _confidence(one("min"), "min", problems)
    high = _confidence(one("max"), "max", problems)
    if low is not None and high is not None and low > high:
        problems.append(f"min={low:g} is above max={high:g}")
        low = high = None
    since = _day(one("since"), "since", problems)
    until = _day(one("until"), "until", problems)
    raw_after = one("after") or "0"
    after = int(raw_after) if raw_after.isdigit() else 0
    if not raw_after.isdigit():
        problems.append(f"after={raw_after!r} is not an item id")
    flt = BrowseFilter(
        states=_list(params.get("state", ()), STATES, "state", problems),
        decisions=_list(params.get("decision", ()), DECISIONS, "decision", problems),
        label=one("label"),
        min_confidence=low,
        max_confidence=high,
        risk_levels=_list(params.get("risk", ()), RISK_LEVELS, "risk", problems),
        since=since,
        until=until + timedelta(days=1) if until is not None else None,
    )
    query = {name: value for name in PARAMS if (value := one(name)) is not None}
    return View(one("job"), flt, after, query, tuple(problems))


def with_job(view: View, job_id: int | None) -> View:
    return replace(view, flt=replace(view.flt, job_id=job_id))
