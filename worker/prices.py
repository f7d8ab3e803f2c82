"""Prices per 1,000 billed calls, per service, as the user configures them; and cost arithmetic.

imgmod ships no price: the vendor's page says only that the API is billable and that "only
requests that return an HTTP status code of 200 are charged" ("Billing"), and prices differ by
account, region and contract. ``IMGMOD_PRICE_PER_1000`` (``baselineCheck_global=0.6,...``) and
``IMGMOD_PRICE_CURRENCY`` (``USD``) come from the user's own bill; without them the dry run,
``imgmod costs`` and ``imgmod status`` show calls only, and say how to get a cost.

Pure: parsed and validated once by :mod:`worker.settings`, passed down as :class:`Prices`.
Amounts are :class:`~decimal.Decimal`, so a cost is exactly what the user's price says.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from types import MappingProxyType

from worker.vendor import SERVICES

HOW_TO_PRICE = (
    "set IMGMOD_PRICE_PER_1000 (e.g. baselineCheck_global=PRICE,aigcDetector_global=PRICE, "
    "from your Alibaba Cloud bill) and IMGMOD_PRICE_CURRENCY to see a cost"
)
_CURRENCY = re.compile(r"[A-Z]{3}")


@dataclass(frozen=True)
class Prices:
    """Price per 1,000 billed calls by service, in ``currency``; empty: no prices known."""

    per_1000: Mapping[str, Decimal] = field(default_factory=lambda: MappingProxyType({}))
    currency: str = ""

    def __bool__(self) -> bool:
        return bool(self.per_1000)

    def cost(self, service: str, calls: int) -> Decimal | None:
        """What ``calls`` billed calls of ``service`` cost; None when its price is unknown."""
        price = self.per_1000.get(service)
        return None if price is None else price * calls / 1000

    def total(self, calls_by_service: Mapping[str, int]) -> Decimal | None:
        """The cost of every service's calls; None when any service with calls has no price."""
        costs = [self.cost(s, n) for s, n in calls_by_service.items() if n]
        if any(c is None for c in costs):
            return None
        return sum((c for c in costs if c is not None), Decimal(0))

    def show(self, amount: Decimal | None) -> str:
        """``12.34 USD``, or the advice when the amount is unknown."""
        if amount is None:
            return f"unknown ({HOW_TO_PRICE})"
        return f"{amount.quantize(Decimal('0.01')):,} {self.currency}"


def parse_prices(spec: str, currency: str) -> Prices:
    """``service=price,...`` and a currency code -> :class:`Prices`; raises ``ValueError``
    naming the part that is wrong (the caller names the variable)."""
    spec, currency = spec.strip(), currency.strip().upper()
    if not spec:
        return Prices()
    per_1000: dict[str, Decimal] = {}
    for part in spec.split(","):
        service, sep, raw = (p.strip() for p in part.partition("="))
        if not sep or not service:
            raise ValueError(f"{part.strip()!r} is not SERVICE=PRICE")
        if service not in SERVICES:
            raise ValueError(f"unknown service {service!r}; use {' or '.join(SERVICES)}")
        if service in per_1000:
            raise ValueError(f"{service} is priced twice")
        try:
            price = Decimal(raw)
        except InvalidOperation:
            raise ValueError(f"{service}={raw!r}: the price is not a number") from None
        if not price.is_finite() or price < 0:
            raise ValueError(f"{service}={raw!r}: the price must be 0 or more")
        per_1000[service] = price
    if not _CURRENCY.fullmatch(currency):
        raise ValueError(
            f"prices need a currency: set IMGMOD_PRICE_CURRENCY to a 3-letter code (e.g. USD), "
            f"not {currency!r}"
        )
    return Prices(MappingProxyType(per_1000), currency)


@dataclass(frozen=True)
class Billing:
    """The settings of what calls cost and may cost: the account's daily budget of billed calls
    (0: none) and the prices. Read by :mod:`worker.settings` from the environment it is given."""

    daily_call_budget: int = 0
    prices: Prices = Prices()


def billing_from(env: Mapping[str, str], error: type[ValueError] = ValueError) -> Billing:
    """``IMGMOD_DAILY_CALL_BUDGET``, ``IMGMOD_PRICE_PER_1000`` and ``IMGMOD_PRICE_CURRENCY``
    from ``env`` (the mapping :func:`worker.settings.load_settings` reads); raises ``error``
    (settings passes its ConfigError) naming the variable and the fix."""
    raw = env.get("IMGMOD_DAILY_CALL_BUDGET", "0").strip() or "0"
    try:
        daily = int(raw.replace("_", ""))
    except ValueError:
        raise error(f"IMGMOD_DAILY_CALL_BUDGET={raw!r} is not a whole number") from None
    if daily < 0:
        raise error(f"IMGMOD_DAILY_CALL_BUDGET={raw!r}: use 0 (no budget) or more")
    spec = env.get("IMGMOD_PRICE_PER_1000", "")
    try:
        prices = parse_prices(spec, env.get("IMGMOD_PRICE_CURRENCY", ""))
    except ValueError as exc:
        raise error(f"IMGMOD_PRICE_PER_1000: {exc}") from None
    return Billing(daily, prices)
