"""The dry run, doctor and ``imgmod costs`` for a job of several services, on a real SQLite
store: references are counted once, billed calls per service (an image answered before by one
service saves that service's call only), costs per service and in all, and a refused service
list is one line with exit 2 before anything is read.

Agreement with a real enqueue, on SQLite and PostgreSQL, and against the emulator's billing
count: tests/integration/test_dryrun_services.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from worker import producer, store
from worker.cli import main
from worker.doctor import check_settings
from worker.dryrun import Estimate, estimate, price
from worker.prices import Prices, parse_prices
from worker.results import parse_response
from worker.sources import read_inputs
from worker.store.ledger import record_billed

BASE = "baselineCheck_global"
AIGC = "aigcDetector_global"
BOTH = f"{BASE},{AIGC}"
VENDOR = Path(__file__).resolve().parent.parent / "data" / "vendor"
N, K = 10, 4  # images in the new input; of them answered before by baselineCheck only


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[sa.Engine]:
    store.upgrade(sqlite_url)
    engine = store.make_engine(sqlite_url)
    yield engine
    engine.dispose()


def _write(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _urls(n: int) -> list[str]:
    return [f"https://example.com/{i}.png" for i in range(n)]


def _enqueue(engine: sa.Engine, name: str, services: str, path: Path) -> store.Job:
    job = store.get_or_create_job(engine, name, services.split(","), "")
    producer.enqueue_records(
        engine,
        job,
        read_inputs([str(path)]),
        lambda: 0,
        reuse=producer.reuse_scope(job, rescan=False, reuse_urls=True),
    )
    return job


def _answer_pending(engine: sa.Engine, job: store.Job) -> None:
    """Store a Code-200 answer for every pending row of ``job``, under the row's service."""
    body = (VENDOR / "response_risk_detected.json").read_text(encoding="utf-8")
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(store.items.c.id, store.items.c.service).where(
                store.items.c.job_id == job.id, store.items.c.state == "pending"
            )
        ).all()
    for item_id, service in rows:
        raw = json.loads(body)
        raw["RequestId"] = f"R{item_id}"
        store.record_result(engine, item_id, "w", service, parse_response(json.dumps(raw), 200))


def _row_count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(store.items)).scalar_one())


@pytest.fixture
def answered_before(engine: sa.Engine, tmp_path: Path) -> sa.Engine:
    """K of the N images answered before by a baselineCheck-only job."""
    _answer_pending(engine, _enqueue(engine, "before", BASE, _write(tmp_path, "k.txt", _urls(K))))
    return engine


def test_an_image_answered_by_one_service_saves_only_that_services_call(
    answered_before: sa.Engine, tmp_path: Path
) -> None:
    engine = answered_before
    path = _write(tmp_path, "n.txt", [*_urls(N), _urls(N)[0], "ftp://example.com/x.png"])
    rows_before = _row_count(engine)
    scope = store.ReuseScope(BASE, "", urls=True)

    result = estimate(
        Estimate("both", (BASE, AIGC)), [list(read_inputs([str(path)]))], engine, None, scope
    )
    price(result, parse_prices(f"{BASE}=2,{AIGC}=0.6", "USD"), qps=100)

    # references once, whatever the services
    assert (result.lines, result.accepted, result.duplicates) == (N + 2, N, 1)
    assert sum(result.rejected.values()) == 1
    # reuse and calls per service
    assert dict(result.reusable_by_service) == {BASE: K}
    assert result.calls == {BASE: N - K, AIGC: N}
    assert result.billed == 2 * N - K
    assert result.cost_by_service == {BASE: Decimal("0.012"), AIGC: Decimal("0.006")}
    assert result.cost == Decimal("0.018")
    assert result.seconds == pytest.approx((2 * N - K) / 98)  # the cap's pace, all calls
    assert _row_count(engine) == rows_before


def test_the_json_has_calls_reuse_and_cost_per_service_and_in_all(
    answered_before: sa.Engine, tmp_path: Path
) -> None:
    path = _write(tmp_path, "n.txt", _urls(N))
    scope = store.ReuseScope(BASE, "", urls=True)
    result = estimate(
        Estimate("both", (BASE, AIGC), max_calls=N),
        [list(read_inputs([str(path)]))],
        answered_before,
        None,
        scope,
    )
    out = json.loads(json.dumps(price(result, parse_prices(f"{BASE}=1", "EUR"), 10).as_dict()))

    assert out["services"] == [BASE, AIGC]
    assert (out["lines"], out["accepted"], out["duplicates"], out["rejected"]) == (N, N, 0, 0)
    assert out["calls"] == {BASE: N - K, AIGC: N} and out["billed_calls"] == 2 * N - K
    assert out["reusable"] == K and out["reusable_by_service"] == {BASE: K, AIGC: 0}
    assert out["copies"] == 0 and out["copies_by_service"] == {BASE: 0, AIGC: 0}
    # aigcDetector has no price: its cost and the total are unknown, baselineCheck's is known
    assert out["estimated_cost_by_service"] == {BASE: "0.006", AIGC: None}
    assert out["estimated_cost"] is None and out["currency"] == "EUR"
    assert out["max_calls"] == N and out["would_pause"] == N - K
    assert out["estimated_seconds"] == round(N / (10 * 0.98), 1)  # the cap lets N through


def test_the_text_names_each_service_and_the_total() -> None:
    result = Estimate("both", (BASE, AIGC), accepted=N)
    result.reusable_by_service[BASE] = K
    result.copies_by_service[AIGC] = 1
    lines = price(result, parse_prices(f"{BASE}=2,{AIGC}=0.6", "USD"), 100).lines_for_people()

    assert f"already moderated, reusable ({BASE}): {K} (no call; --rescan to call anyway)" in lines
    assert f"already moderated, reusable ({AIGC}): 0 (no call; --rescan to call anyway)" in lines
    assert f"calls that would be billed ({BASE}): {N - K}" in lines
    assert f"calls that would be billed ({AIGC}): {N - 1}" in lines
    assert f"calls that would be billed in all: {2 * N - K - 1}" in lines
    assert f"estimated cost ({BASE}): 0.01 USD" in lines
    assert f"estimated cost ({AIGC}): 0.01 USD" in lines
    assert "estimated cost in all: 0.02 USD" in lines
    one = price(Estimate("one", (BASE,), accepted=3), Prices(), 100).lines_for_people()
    assert "already moderated, reusable: 0 (no call; --rescan to call anyway)" in one
    assert not any("in all" in line for line in one)


def test_copies_wait_per_service_and_rescan_still_waits_for_them(
    engine: sa.Engine, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    (folder / "a.png").write_bytes(png)
    (folder / "copy-of-a.png").write_bytes(png)  # same bytes: waits for a's answer
    (folder / "b.png").write_bytes(png + b"b")
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "old-a.png").write_bytes(png)  # a's bytes, answered by baselineCheck only
    _answer_pending(engine, _enqueue(engine, "before", BASE, earlier))

    def calls(rescan: bool) -> dict[str, int]:
        scope = store.ReuseScope(BASE, "", stored=not rescan)
        batches = [list(read_inputs([str(folder)]))]
        counted = estimate(Estimate("f", (BASE, AIGC)), batches, engine, None, scope)
        return price(counted, Prices(), 100).calls

    # baselineCheck: a and its copy reuse the stored answer; aigcDetector: the copy waits
    assert calls(rescan=False) == {BASE: 1, AIGC: 2}
    # --rescan takes no stored answer, but the copy still waits for a's call (per service)
    assert calls(rescan=True) == {BASE: 2, AIGC: 2}


def test_an_image_open_in_another_job_is_waited_for_not_called(
    engine: sa.Engine, tmp_path: Path
) -> None:
    urls = _urls(N)
    _enqueue(engine, "running", AIGC, _write(tmp_path, "k.txt", urls[:K]))  # pending: in flight
    scope = store.ReuseScope(BASE, "", urls=True)
    batches = [list(read_inputs([str(_write(tmp_path, "n.txt", urls))]))]
    result = price(estimate(Estimate("b", (BASE, AIGC)), batches, engine, None, scope), Prices(), 1)

    assert dict(result.copies_by_service) == {AIGC: K}
    assert result.calls == {BASE: N, AIGC: N - K}


# --------------------------------------------------------------------------- the command


def imgmod(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


@pytest.mark.parametrize(
    ("services", "extra_env", "said"),
    [
        (f"{BASE},{BASE}", {}, f"--service: {BASE} given twice; name each once"),
        (f"{BASE},nope_global", {}, "--service: 'nope_global' is not a moderation service"),
        (",", {}, "--service: no service given"),
        (BOTH, {"IMGMOD_REGION": "eu-west-1"}, f"lists {BASE} for ap-southeast-1, us-east-1 only"),
    ],
)
def test_a_refused_service_list_is_one_line_and_exit_2_before_any_input_is_read(
    sqlite_url: str, services: str, extra_env: dict[str, str], said: str
) -> None:
    env = {"IMGMOD_DATABASE_URL": sqlite_url, **extra_env}
    missing = "/nowhere/input.txt"  # would be refused too: the service list is checked first
    done = imgmod(env, "run", missing, "--job", "j", "--service", services, "--dry-run")

    assert done.exit_code == 2, done.output
    (line,) = done.stderr.strip().splitlines()
    assert said in line and missing not in line
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()  # nothing created


def test_the_dry_run_command_estimates_a_two_service_job(
    answered_before: sa.Engine, sqlite_url: str, tmp_path: Path
) -> None:
    path = _write(tmp_path, "n.txt", _urls(N))
    env = {
        "IMGMOD_DATABASE_URL": sqlite_url,
        "IMGMOD_INFO_TYPE": "",
        "IMGMOD_PRICE_PER_1000": f"{BASE}=1,{AIGC}=1",
        "IMGMOD_PRICE_CURRENCY": "USD",
    }
    args = ("enqueue", str(path), "--job", "both", "--service", BOTH, "--reuse-urls", "--dry-run")
    rows_before = _row_count(answered_before)

    out = json.loads(imgmod(env, *args, "--json").stdout)
    assert out["calls"] == {BASE: N - K, AIGC: N} and out["database"] == "read"
    assert out["estimated_cost_by_service"] == {BASE: "0.006", AIGC: "0.01"}
    assert out["estimated_cost"] == "0.016"
    text = imgmod(env, *args).stdout
    assert f"calls that would be billed ({AIGC}): {N}" in text
    assert "estimated cost in all: 0.02 USD" in text
    assert _row_count(answered_before) == rows_before
    # IMGMOD_SERVICE naming both is the default for --service
    from_settings = imgmod({**env, "IMGMOD_SERVICE": BOTH}, *args[:4], "--dry-run", "--json")
    assert json.loads(from_settings.stdout)["services"] == [BASE, AIGC]


def test_a_job_of_other_services_is_refused_by_the_dry_run(
    engine: sa.Engine, sqlite_url: str, tmp_path: Path
) -> None:
    store.get_or_create_job(engine, "both", (BASE, AIGC), "")
    path = str(_write(tmp_path, "n.txt", _urls(2)))
    env = {"IMGMOD_DATABASE_URL": sqlite_url, "IMGMOD_INFO_TYPE": ""}

    same = imgmod(env, "run", path, "--job", "both", "--service", BOTH, "--dry-run")
    assert same.exit_code == 0, same.output
    other = imgmod(env, "run", path, "--job", "both", "--service", BASE, "--dry-run")
    assert other.exit_code == 2 and "already exists with service" in other.stderr


def test_costs_show_a_line_per_service_of_a_two_service_job(
    engine: sa.Engine, sqlite_url: str
) -> None:
    job = store.get_or_create_job(engine, "both", (BASE, AIGC), "")
    day = date(2026, 12, 6)
    record_billed(engine, job.id, BASE, day, calls=N - K)
    record_billed(engine, job.id, AIGC, day, calls=N)
    env = {
        "IMGMOD_DATABASE_URL": sqlite_url,
        "IMGMOD_INFO_TYPE": "",
        "IMGMOD_PRICE_PER_1000": f"{BASE}=1,{AIGC}=2",
        "IMGMOD_PRICE_CURRENCY": "USD",
    }

    lines = imgmod(env, "costs", "--job", "both").stdout.splitlines()
    assert f"2026-12-06  both  {BASE}  {N - K} calls  0.01 USD" in lines
    assert f"2026-12-06  both  {AIGC}  {N} calls  0.02 USD" in lines
    assert f"total {BASE}: {N - K} calls" in lines and f"total {AIGC}: {N} calls" in lines
    assert "estimated spend: 0.03 USD" in lines
    out = json.loads(imgmod(env, "costs", "--job", "both", "--json").stdout)
    assert out["calls_by_service"] == {BASE: N - K, AIGC: N}
    assert out["calls"] == 2 * N - K and out["cost"] == "0.026"


# --------------------------------------------------------------------------- doctor


def test_doctor_warns_for_each_service_its_region_does_not_list() -> None:
    check, settings = check_settings({"IMGMOD_SERVICE": BOTH, "IMGMOD_REGION": "eu-west-1"})
    assert check.ok and settings is not None
    assert f"service {BASE}, {AIGC}," in check.detail
    assert [w.split(" for ")[0] for w in check.warnings] == [
        f"the vendor's region table lists no {BASE}",
        f"the vendor's region table lists no {AIGC}",
    ]
    listed, _ = check_settings({"IMGMOD_SERVICE": BOTH, "IMGMOD_REGION": "ap-southeast-1"})
    assert listed.ok and listed.warnings == ()
    twice, _ = check_settings({"IMGMOD_SERVICE": f"{BASE},{BASE}"})
    assert not twice.ok and "given twice" in twice.detail
