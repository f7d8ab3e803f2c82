"""Retry limits as a real worker applies them: a gateway's 5xx page counts under "500" (so
IMGMOD_RETRY_PER_CODE=500=N holds for it), and a 404 gets its one default retry."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from worker import store

pytestmark = pytest.mark.service


def _items(url: str, job: str) -> list[sa.Row]:
    engine = store.make_engine(url)
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(
                    sa.text(
                        "SELECT i.state, i.last_code, i.attempts FROM items i "
                        "JOIN jobs j ON j.id = i.job_id WHERE j.name = :job"
                    ),
                    {"job": job},
                )
            )
    finally:
        engine.dispose()


def test_a_404_is_retried_once_and_a_gateway_502_page_obeys_the_500_limit(pipeline) -> None:
    img = pipeline.images
    db = pipeline.env["IMGMOD_DATABASE_URL"]
    pipeline.start_worker(concurrency=4, IMGMOD_RETRY_PER_CODE="405=2,500=1")

    src = pipeline.write("missing.txt", [f"{img.url}/missing/{i}.png" for i in range(2)])
    run = pipeline.imgmod("run", str(src), "--job", "missing", "--stall-seconds", "60")
    assert run.returncode == 3, run.stdout + run.stderr
    # the vendor: "check the image URL or retry"; one retry, then final
    assert [tuple(r) for r in _items(db, "missing")] == [("failed", "404", 2)] * 2

    # Every call now meets the gateway's HTML 502/503 page, keyed "HTTP 502" in last_code.
    # Counted under "HTTP 502" (the old key) it got IMGMOD_MAX_ATTEMPTS (8) instead of 500=1.
    pipeline.emulator.configure(fault_gateway_5xx=1.0)
    src = pipeline.write("gateway.txt", [img.image_url(i) for i in range(3)])
    run = pipeline.imgmod("run", str(src), "--job", "gateway", "--stall-seconds", "60")
    assert run.returncode == 3, run.stdout + run.stderr
    rows = _items(db, "gateway")
    assert len(rows) == 3
    for state, code, attempts in rows:
        assert state == "failed" and code in ("HTTP 502", "HTTP 503")
        assert attempts == 1
    assert pipeline.emulator.stats()["billed"] == 0
