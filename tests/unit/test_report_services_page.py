"""The report's pure parts for a job of several services: each service's calls priced at its
own price, the total only when every service is priced, and the page's per-service section
(present for several services only, archive text escaped). The figures from a real store are
tests/integration/test_report_services.py."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

from tests.unit.test_report_html_page import _data
from worker import report_data as rd
from worker.prices import Prices
from worker.report_html import render_html

BASE, AIGC = "baselineCheck_global", "aigcDetector_global"


def test_each_service_is_billed_at_its_own_price():
    prices = Prices({BASE: Decimal("0.6"), AIGC: Decimal("1.5")}, "USD")
    base = rd.service_billing(BASE, 1234, 2, prices)
    aigc = rd.service_billing(AIGC, 1000, 0, prices)
    assert (base.price_per_1000, base.cost, base.reused) == (Decimal("0.6"), Decimal("0.74"), 2)
    assert aigc.cost == Decimal("1.50") and aigc.currency == "USD"
    total = rd.total_billing((base, aigc), 2234, 2, "USD")
    assert total.cost == Decimal("2.24") and total.price_per_1000 is None
    assert (total.billed_calls, total.reused) == (2234, 2)


def test_the_total_is_unknown_unless_every_service_is_priced():
    prices = Prices({BASE: Decimal("0.6")}, "USD")
    parts = (rd.service_billing(BASE, 1000, 0, prices), rd.service_billing(AIGC, 0, 0, prices))
    assert parts[1].cost is None
    assert rd.total_billing(parts, 1000, 0, "USD").cost is None
    assert rd.total_billing((), 0, 0, "").cost is None


def test_one_service_keeps_its_price_and_cost():
    prices = Prices({BASE: Decimal("0.6")}, "USD")
    one = rd.service_billing(BASE, 9, 1, prices)
    assert rd.total_billing((one,), 9, 1, "USD") == rd.Billing(
        9, 1, Decimal("0.6"), "USD", rd.cost(9, Decimal("0.6"))
    )
    unpriced = rd.service_billing(BASE, 9, 1, Prices())
    assert rd.total_billing((unpriced,), 9, 1, "") == rd.Billing(9, 1, None, "", None)


def _service(name: str, billed: int, cost: Decimal | None, label: str) -> rd.ServiceReport:
    return rd.ServiceReport(
        service=name,
        states=(rd.Count("done", billed), rd.Count("failed", 1)),
        risks=(rd.Count("high", billed),),
        labels=(rd.LabelFigure(label, billed, 90.0, (0,) * 9 + (billed, 0)),),
        failures=(rd.Count("404", 1),),
        billing=rd.Billing(billed, 0, None if cost is None else Decimal("1"), "USD", cost),
    )


def test_the_page_has_a_section_per_service_only_for_several_services():
    two = _data(
        service=f"{BASE},{AIGC}",
        services=(
            _service(BASE, 5, Decimal("0.01"), "<b>x</b>"),
            _service(AIGC, 4, None, "aigc_label"),
        ),
        references=(rd.Count("done", 3), rd.Count("failed", 1)),
        billing=rd.Billing(9, 0, None, "USD", None),
    )
    html = render_html(two)
    assert f"2 services: {BASE}, {AIGC}" in html
    assert f'<article class="service" data-service="{BASE}" data-billed="5"' in html
    assert f'data-service="{AIGC}" data-billed="4" data-reused="0">' in html  # no cost
    assert 'data-figure="references"' in html and 'data-key="done" data-value="3"' in html
    assert f'data-key="{AIGC}" data-billed="4" data-reused="0" data-cost=""' in html
    assert "no price set" in html and "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert "Rows by state (one per reference and service)" in html

    one = _data(services=(_service(BASE, 9, Decimal("0.01"), "l"),))
    html = render_html(one)
    assert 'id="by-service"' not in html and 'id="references"' not in html
    assert "References by state" in html and "cost at 0.6 USD per 1,000 calls" in html


def test_several_services_is_what_the_breakdown_hangs_on():
    data = _data()
    assert not data.several_services
    both = dataclasses.replace(
        data, services=(_service(BASE, 1, None, "a"), _service(AIGC, 1, None, "b"))
    )
    assert both.several_services
