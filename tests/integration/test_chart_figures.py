"""worker.report_data on SQLite and PostgreSQL: the chart figures counted by the database
(confidence buckets, time buckets: their SQL differs per dialect) from stored answers at known
times. The page itself, in a browser, is test_report_html.py."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from worker import report_data, store
from worker.prices import Prices
from worker.results import parse_response
from worker.store.schema import decisions

pytestmark = pytest.mark.service

VENDOR = Path(__file__).resolve().parent.parent / "data" / "vendor"
T0 = datetime(2026, 12, 6, 12, 0, 0, tzinfo=timezone.utc)


def _item(n: int, state: str = "pending") -> store.NewItem:
    rejected = state == "rejected"
    return store.NewItem(
        kind="invalid" if rejected else "url",
        ref_key=store.rejected_ref_key("in.txt", n) if rejected else f"https://e.com/{n}.jpg",
        image_url=None if rejected else f"https://e.com/{n}.jpg",
        oss_bucket=None, oss_object=None, oss_region=None, data_id=None, referer=None,
        source="in.txt", line=n, state=state,
        last_error=f"line {n}: imageUrl: is not an absolute URL" if rejected else None,
        raw_input=None,
    )  # fmt: skip


def test_figures_are_bucketed_by_the_database_at_the_times_stored(engine):
    job = store.get_or_create_job(engine, "charts", "baselineCheck_global", "")
    ids = sorted(store.insert_items(engine, job.id, [_item(n) for n in range(1, 8)]))
    store.insert_items(engine, job.id, [_item(8, "rejected")])
    risky = parse_response((VENDOR / "response_risk_detected.json").read_text(), 200)
    clean = parse_response((VENDOR / "response_no_risk.json").read_text(), 200)
    # answers at +0 s, +1 s, +2 s, +2.9 s and +125 s; failures at +3 s and +70 s
    answered = list(zip(ids[:5], (0, 1, 2, 2.9, 125), strict=True))
    for n, (item_id, _) in enumerate(answered):
        store.claim_item(engine, item_id, "w", 60)
        store.record_result(engine, item_id, "w", job.service, risky if n % 2 else clean)
    for item_id in ids[5:]:
        store.claim_item(engine, item_id, "w", 60)
        store.record_failure(engine, item_id, "w", "404", "gone", "E404")
    with engine.begin() as conn:
        for item_id, offset in answered:
            conn.execute(
                sa.update(store.results)
                .where(store.results.c.item_id == item_id)
                .values(moderated_at=T0 + timedelta(seconds=offset))
            )
        for item_id, offset in zip(ids[5:], (3, 70), strict=True):
            conn.execute(
                sa.update(store.items)
                .where(store.items.c.id == item_id)
                .values(finished_at=T0 + timedelta(seconds=offset))
            )
        conn.execute(
            sa.insert(decisions),
            [
                dict(item_id=i, job_id=job.id, decision=d, policy_name="p", policy_version="1",
                     source="policy", actor="t", decided_at=T0)
                for i, d in zip(ids, ("block", "pass", "pass", "review", "pass", "unscanned",
                                      "unscanned"), strict=True)
            ],
        )  # fmt: skip
        labelled = conn.execute(
            sa.select(store.result_labels.c.label, store.result_labels.c.confidence).where(
                store.result_labels.c.job_id == job.id
            )
        ).all()

    data = report_data.report_data(
        engine,
        store.get_job(engine, "charts"),
        prices=Prices({"baselineCheck_global": Decimal("1.2")}, "EUR"),
    )

    # 125 s of calls: 5 s buckets, 26 of them, the empty ones as zeros
    assert data.bucket_seconds == 5 and len(data.timeline) == 26
    assert data.timeline[0].start == "2026-12-06T12:00:00Z"
    assert [p.answers for p in data.timeline if p.answers] == [4, 1]
    assert data.timeline[0].answers == 4 and data.timeline[25].answers == 1
    assert data.timeline[0].per_second == 0.8
    assert data.timeline[0].failures == 1 and data.timeline[14].failures == 1
    assert data.labels and any(conf is not None for _, conf in labelled)
    # confidence buckets: every label row in the bucket of its confidence, nonLabel-style last
    for figure in data.labels:
        expected = [0] * 11
        for label, conf in labelled:
            if label == figure.label:
                expected[10 if conf is None else min(int(conf // 10), 9)] += 1
        assert list(figure.histogram) == expected, figure
    assert {c.key: c.value for c in data.states if c.value} == {
        "done": 5,
        "failed": 2,
        "rejected": 1,
    }
    assert [(p.policy, p.version) for p in data.decisions] == [("p", "1")]
    assert {c.key: c.value for c in data.decisions[0].counts} == {
        "block": 1,
        "review": 1,
        "pass": 3,
        "unscanned": 2,
    }
    assert [(c.key, c.value) for c in data.failures] == [("404", 2)]
    assert data.billing.billed_calls == 5
    assert data.billing.cost == Decimal("0.01") and data.billing.currency == "EUR"
    assert [(r.source, r.line) for r in data.rejected] == [("in.txt", 8)]
    assert data.rejected_total == 1
