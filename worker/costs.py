"""What was billed, and what it cost: the SQL ledger by day, job and service, priced with the
user's own prices; and the budgets' state for ``imgmod status``.

The ledger (:mod:`worker.store.ledger`) counts Code-200 answers as the workers got them, so
it is what the vendor bills (an answer reused from an earlier job is not in it: no call).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy.engine import Engine

from worker.budget import Usage, day_of, today, usage
from worker.prices import Prices
from worker.store import Job
from worker.store.ledger import BilledRow, billed_for_job, billed_on, billed_rows


@dataclass(frozen=True)
class CostLine:
    row: BilledRow
    cost: Decimal | None


@dataclass(frozen=True)
class Costs:
    lines: list[CostLine]
    prices: Prices

    @property
    def calls(self) -> int:
        return sum(line.row.calls for line in self.lines)

    @property
    def by_service(self) -> dict[str, int]:
        totals: Counter[str] = Counter()
        for line in self.lines:
            totals[line.row.service] += line.row.calls
        return dict(totals)

    @property
    def total(self) -> Decimal | None:
        return self.prices.total(self.by_service) if self.prices else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": [
                {
                    "day": line.row.day.isoformat(),
                    "job": line.row.job,
                    "service": line.row.service,
                    "calls": line.row.calls,
                    "cost": None if line.cost is None else str(line.cost),
                }
                for line in self.lines
            ],
            "calls": self.calls,
            "calls_by_service": self.by_service,
            "cost": None if self.total is None else str(self.total),
            "currency": self.prices.currency or None,
        }


def costs(
    engine: Engine, prices: Prices, since: date | None = None, job_id: int | None = None
) -> Costs:
    """Billed calls per day, job and service (from ``since``, of one job), with their cost."""
    rows = billed_rows(engine, since, job_id)
    return Costs([CostLine(row, prices.cost(row.service, row.calls)) for row in rows], prices)


@dataclass(frozen=True)
class BudgetState:
    """A job's cap and the account's daily budget, as recorded in SQL."""

    job: Usage
    daily: Usage

    def as_dict(self) -> dict[str, Any]:
        return {
            "job": {"cap": self.job.cap, "used": self.job.used, "left": self.job.left},
            "daily": {"cap": self.daily.cap, "used": self.daily.used, "left": self.daily.left},
        }


def budget_state(engine: Engine, job: Job, daily_cap: int) -> BudgetState:
    """What the job and today (UTC) have billed against their caps (the ledger lags the calls
    by at most a second per worker)."""
    return BudgetState(
        usage(job.max_calls, billed_for_job(engine, job.id)),
        usage(daily_cap, billed_on(engine, day_of(today()))),
    )
