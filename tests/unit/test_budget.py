"""Budgets, prices, the ledger and the dry run without services: the pure core (what is left,
why a row waits, what a price list says), and the SQL side on a real SQLite store.

The Redis scripts and whole jobs against the emulator's billing count are in
tests/integration/test_budgets.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from worker import producer, store
from worker.budget import Exhausted, day_of, left, reason, usage
from worker.costs import budget_state, costs
from worker.dryrun import Estimate, estimate, price
from worker.prices import HOW_TO_PRICE, Prices, billing_from, parse_prices
from worker.results import parse_response
from worker.settings import ConfigError, load_settings
from worker.sources import read_inputs
from worker.store.budgets import pause_item, paused_reasons, set_max_calls, unpause_job
from worker.store.ledger import billed_for_job, billed_on, billed_rows, record_billed

SERVICE = "baselineCheck_global"
AIGC = "aigcDetector_global"
VENDOR = Path(__file__).resolve().parent.parent / "data" / "vendor"


# --------------------------------------------------------------------------- the pure core


def test_what_is_left_never_goes_negative_and_no_cap_means_none() -> None:
    assert left(50, 20) == 30
    assert left(50, 50) == 0
    assert left(50, 70) == 0  # a cap lowered below what was spent
    assert left(None, 10) is None and left(0, 10) is None


def test_a_paused_row_says_which_budget_and_its_size() -> None:
    assert reason("daily", 50_000) == "paused: daily budget 50,000 reached"
    assert Exhausted("job", 50).reason == "paused: job budget (--max-calls) 50 reached"


def test_usage_lines_for_status() -> None:
    assert usage(100, 40).line("daily budget") == "daily budget: 40 of 100 calls used, 60 left"
    assert usage(None, 7).line("job") == "job: 7 calls billed, no cap"
    assert usage(0, 7).cap is None


def test_day_numbers_are_utc_dates() -> None:
    assert day_of(0) == date(1970, 1, 1)
    assert day_of(20_428) == date(2025, 12, 6)


# --------------------------------------------------------------------------- prices


def test_prices_parse_per_service_with_a_currency() -> None:
    prices = parse_prices(f" {SERVICE}=0.60, {AIGC}=1.5 ", "usd")
    assert prices.per_1000 == {SERVICE: Decimal("0.60"), AIGC: Decimal("1.5")}
    assert prices.currency == "USD"
    assert prices.cost(SERVICE, 2500) == Decimal("1.5")
    assert prices.total({SERVICE: 1000, AIGC: 2000}) == Decimal("3.6")
    assert prices.show(Decimal("1234.567")) == "1,234.57 USD"


def test_no_prices_means_no_cost_and_advice() -> None:
    prices = parse_prices("", "")
    assert not prices
    assert prices.total({SERVICE: 10}) is None
    assert HOW_TO_PRICE in prices.show(None)
    # a service with calls and no price: the total is unknown, never a partial sum
    assert parse_prices(f"{SERVICE}=1", "EUR").total({SERVICE: 1000, AIGC: 1}) is None


@pytest.mark.parametrize(
    ("spec", "currency", "needle"),
    [
        ("baselineCheck=1", "USD", "unknown service 'baselineCheck'"),
        (f"{SERVICE}=cheap", "USD", "not a number"),
        (f"{SERVICE}=-1", "USD", "0 or more"),
        (f"{SERVICE}", "USD", "is not SERVICE=PRICE"),
        (f"{SERVICE}=1,{SERVICE}=2", "USD", "priced twice"),
        (f"{SERVICE}=1", "", "IMGMOD_PRICE_CURRENCY"),
        (f"{SERVICE}=1", "dollars", "3-letter code"),
    ],
)
def test_bad_prices_name_what_is_wrong(spec: str, currency: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        parse_prices(spec, currency)


def test_settings_read_the_budget_and_prices_once_and_refuse_bad_values() -> None:
    settings = load_settings(
        {
            "IMGMOD_DAILY_CALL_BUDGET": "50_000",
            "IMGMOD_PRICE_PER_1000": f"{SERVICE}=0.6",
            "IMGMOD_PRICE_CURRENCY": "USD",
        }
    )
    assert settings.billing.daily_call_budget == 50_000
    assert settings.billing.prices.cost(SERVICE, 1000) == Decimal("0.6")
    assert load_settings({}).billing.daily_call_budget == 0
    with pytest.raises(ConfigError, match="IMGMOD_DAILY_CALL_BUDGET='lots'"):
        load_settings({"IMGMOD_DAILY_CALL_BUDGET": "lots"})
    with pytest.raises(ConfigError, match="IMGMOD_DAILY_CALL_BUDGET='-1'"):
        load_settings({"IMGMOD_DAILY_CALL_BUDGET": "-1"})
    with pytest.raises(ConfigError, match="IMGMOD_PRICE_PER_1000: .*currency"):
        load_settings({"IMGMOD_PRICE_PER_1000": f"{SERVICE}=1"})
    assert billing_from({}).prices == Prices()


# --------------------------------------------------------------------------- the SQL side


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[sa.Engine]:
    store.upgrade(sqlite_url)
    engine = store.make_engine(sqlite_url)
    yield engine
    engine.dispose()


def _urls(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _enqueue(engine: sa.Engine, name: str, path: Path, **scope: bool) -> store.Job:
    job = store.get_or_create_job(engine, name, SERVICE, "")
    producer.enqueue_records(
        engine,
        job,
        read_inputs([str(path)]),
        lambda: 0,
        reuse=producer.reuse_scope(job, rescan=False, reuse_urls=scope.get("reuse_urls", False)),
    )
    return job


def _answer_all(engine: sa.Engine, job: store.Job) -> None:
    text = (VENDOR / "response_risk_detected.json").read_text(encoding="utf-8")
    with engine.connect() as conn:
        ids = list(
            conn.execute(
                sa.select(store.items.c.id).where(
                    store.items.c.job_id == job.id, store.items.c.state == "pending"
                )
            ).scalars()
        )
    for item_id in ids:
        raw = json.loads(text)
        raw["RequestId"] = f"R{item_id}"
        store.record_result(engine, item_id, "w", SERVICE, parse_response(json.dumps(raw), 200))


def _row_count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(store.items)).scalar_one())


def test_ledger_counts_per_day_job_and_service_and_costs_price_them(engine) -> None:
    job = store.get_or_create_job(engine, "nightly", SERVICE, "")
    other = store.get_or_create_job(engine, "other", AIGC, "")
    day, next_day = date(2026, 12, 6), date(2026, 12, 7)
    for _ in range(3):
        record_billed(engine, job.id, SERVICE, day)
    record_billed(engine, job.id, SERVICE, next_day, calls=10)
    record_billed(engine, other.id, AIGC, day, calls=5)

    assert billed_for_job(engine, job.id) == 13
    assert billed_on(engine, day) == 8
    assert [(r.day, r.job, r.service, r.calls) for r in billed_rows(engine)] == [
        (day, "nightly", SERVICE, 3),
        (day, "other", AIGC, 5),
        (next_day, "nightly", SERVICE, 10),
    ]
    assert [r.calls for r in billed_rows(engine, since=next_day)] == [10]
    assert [r.calls for r in billed_rows(engine, job_id=other.id)] == [5]

    priced = costs(engine, parse_prices(f"{SERVICE}=1,{AIGC}=2", "USD"))
    assert priced.by_service == {SERVICE: 13, AIGC: 5}
    assert priced.total == Decimal("0.023")
    assert costs(engine, Prices()).total is None


def test_a_paused_row_waits_with_its_reason_and_resume_reopens_it(engine, tmp_path) -> None:
    job = _enqueue(engine, "capped", _urls(tmp_path, "a.txt", ["https://example.com/1.png"]))
    set_max_calls(engine, job.id, 1)
    (item_id,) = store.take_pending(engine, job.id, 10)
    claimed = store.claim_item(engine, item_id, "w1", 30)
    assert claimed is not None and claimed.max_calls == 1 and claimed.attempts == 1

    assert not pause_item(engine, item_id, "someone-else", "paused: x")
    assert pause_item(engine, item_id, "w1", reason("job", 1))
    assert store.state_counts(engine, job.id)["paused"] == 1
    assert paused_reasons(engine, job.id) == {"paused: job budget (--max-calls) 1 reached": 1}
    assert store.take_pending(engine, job.id, 10) == []  # the window never publishes it
    assert store.claim_item(engine, item_id, "w2", 30) is None  # nor does a worker call
    store.finish_job_if_complete(engine, job.id)

    assert unpause_job(engine, job.id) == 1
    assert store.get_job(engine, "capped").finished_at is None  # type: ignore[union-attr]
    reopened = store.claim_item(engine, item_id, "w3", 30)
    assert reopened is not None and reopened.attempts == 1  # the paused claim gave it back


def test_status_budget_reads_the_ledger(engine) -> None:
    job = store.get_or_create_job(engine, "capped", SERVICE, "")
    set_max_calls(engine, job.id, 50)
    record_billed(engine, job.id, SERVICE, date(1970, 1, 1))
    state = budget_state(engine, store.get_job(engine, "capped"), 100)  # type: ignore[arg-type]
    assert state.job.cap == 50 and state.job.used == 1 and state.job.left == 49
    assert state.daily.cap == 100 and state.daily.used == 0  # today's, not 1970's


# --------------------------------------------------------------------------- the dry run


def test_a_dry_run_counts_like_an_enqueue_and_writes_nothing(engine, tmp_path) -> None:
    first = _enqueue(
        engine,
        "first",
        _urls(tmp_path, "old.txt", [f"https://example.com/{n}.png" for n in range(3)]),
    )
    _answer_all(engine, first)
    lines = [f"https://example.com/{n}.png" for n in range(6)]  # 0-2 answered before
    lines += ["https://example.com/5.png", "ftp://example.com/x.png", "not a url"]
    path = _urls(tmp_path, "new.txt", lines)
    rows_before = _row_count(engine)

    scope = store.ReuseScope(SERVICE, "", urls=True)
    batches = [list(read_inputs([str(path)]))]
    result = estimate(Estimate("second", (SERVICE,)), batches, engine, None, scope)
    price(result, parse_prices(f"{SERVICE}=2", "USD"), qps=100)

    assert (result.lines, result.accepted, result.duplicates) == (9, 6, 1)
    assert sum(result.rejected.values()) == 2 and len(result.rejected) == 2
    assert result.reusable == 3
    assert result.calls == {SERVICE: 3} and result.cost == Decimal("0.006")
    assert result.seconds == pytest.approx(3 / 98)
    assert _row_count(engine) == rows_before

    # Without --reuse-urls URLs are called again; against the job itself, rows it has are
    # duplicates (running the same enqueue twice adds nothing).
    again = estimate(Estimate("first", (SERVICE,)), batches, engine, first.id, None)
    assert (again.accepted, again.duplicates, again.reusable) == (3, 4, 0)
    out = price(again, Prices(), 100).as_dict()
    assert out["billed_calls"] == 3 and out["estimated_cost"] is None
    assert any("estimated cost: unknown" in line for line in again.lines_for_people())


def test_a_dry_run_with_a_cap_says_how_many_would_wait() -> None:
    capped = price(Estimate("c", (SERVICE,), accepted=10, max_calls=4), Prices(), qps=100)
    assert capped.billed == 10 and capped.would_pause == 6
    assert capped.seconds == pytest.approx(4 / 98)  # only the calls the cap lets through
    assert "with --max-calls 4: 4 billed, 6 would wait as paused" in capped.lines_for_people()
    assert price(Estimate("u", (SERVICE,), accepted=3), Prices(), 100).would_pause == 0


def test_a_followed_job_with_paused_rows_ends_with_the_budget_exit_code() -> None:
    from worker import watch
    from worker.cli.errors import EXIT_BUDGET, EXIT_INCOMPLETE
    from worker.cli.progress import render_follow

    assert render_follow("j", [watch.Finished({"done": 50, "paused": 150})]) == EXIT_BUDGET == 4
    # a failure and a pause: the pause decides, since resume is what to do next
    assert render_follow("j", [watch.Finished({"failed": 1, "paused": 1})]) == EXIT_BUDGET
    assert render_follow("j", [watch.Finished({"failed": 1, "paused": 0})]) == EXIT_INCOMPLETE


def test_a_dry_run_counts_copies_of_one_image_once(tmp_path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    (folder / "a.png").write_bytes(png)
    (folder / "copy-of-a.png").write_bytes(png)  # same bytes: waits for a's answer
    (folder / "b.png").write_bytes(png + b"b")

    scope = store.ReuseScope(SERVICE, "")
    result = estimate(
        Estimate("f", (SERVICE,)), [list(read_inputs([str(folder)]))], None, None, scope
    )
    assert (result.accepted, result.copies, result.reusable) == (3, 1, 0)
    assert price(result, Prices(), 100).calls == {SERVICE: 2}
    rescan = estimate(
        Estimate("f", (SERVICE,)), [list(read_inputs([str(folder)]))], None, None, None
    )
    assert price(rescan, Prices(), 100).calls == {SERVICE: 3}  # --rescan: every file is called
