"""``imgmod run oss://BUCKET/PREFIX --dry-run`` against the emulator's OSS: the prefix is listed
and filtered as a real run lists it, nothing is written, and objects an earlier job already has
answers for are counted as reusable (by their listed ETag), so the estimate bills only the rest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.commands import run_imgmod
from tests.support.emulator import running_emulator
from worker import store
from worker.emulator import TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET
from worker.results import parse_response

pytestmark = pytest.mark.service

REGION = "cn-hangzhou"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
VENDOR = Path(__file__).resolve().parent.parent / "data" / "vendor"


@pytest.fixture
def env(tmp_path, sqlite_url, redis_url):
    bucket = tmp_path / "oss" / REGION / "photos" / "in"
    bucket.mkdir(parents=True)
    for i in range(12):
        (bucket / f"{i:02d}.png").write_bytes(PNG + bytes([i]))
    (bucket / "notes.txt").write_bytes(b"not an image")  # skipped by the default filter
    (bucket / "empty.png").write_bytes(b"")  # rejected: empty
    with running_emulator(oss_root=tmp_path / "oss", oss_region=REGION) as emulator:
        yield {
            "IMGMOD_DATABASE_URL": sqlite_url,
            "IMGMOD_BROKER_URL": redis_url,
            "IMGMOD_ENDPOINT": emulator.url,
            "IMGMOD_OSS_ENDPOINT": emulator.oss_url,
            "ALIBABA_CLOUD_ACCESS_KEY_ID": TEST_ACCESS_KEY_ID,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": TEST_ACCESS_KEY_SECRET,
        }


def _estimate(env, job: str) -> dict:
    done = run_imgmod(
        env, "run", "oss://photos/in/", "--oss-region", REGION, "--job", job, "--dry-run", "--json"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_a_dry_run_lists_the_prefix_and_counts_what_earlier_jobs_answered(env) -> None:
    assert run_imgmod(env, "db", "upgrade").returncode == 0
    fresh = _estimate(env, "first")
    assert (fresh["lines"], fresh["accepted"], fresh["rejected"], fresh["skipped"]) == (
        13,
        12,
        1,
        1,
    )
    assert fresh["calls"] == {"baselineCheck_global": 12} and fresh["reusable"] == 0
    engine = store.make_engine(env["IMGMOD_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(store.items)).scalar() == 0

        # A real enqueue of the prefix, every row answered as a worker would store it ...
        enqueued = run_imgmod(
            env, "enqueue", "oss://photos/in/", "--oss-region", REGION, "--job", "first"
        )
        assert enqueued.returncode == 0, enqueued.stderr
        answer = (VENDOR / "response_risk_detected.json").read_text(encoding="utf-8")
        with engine.connect() as conn:
            ids = (
                conn.execute(
                    sa.select(store.items.c.id).where(
                        store.items.c.state.in_(("pending", "queued"))
                    )
                )
                .scalars()
                .all()
            )
        for item_id in ids:
            store.record_result(
                engine, item_id, "w", "baselineCheck_global", parse_response(answer, 200)
            )

        # ... so a second job over the same unchanged objects would bill nothing.
        again = _estimate(env, "second")
        assert (again["accepted"], again["reusable"], again["billed_calls"]) == (12, 12, 0)
        same_job = _estimate(env, "first")  # the job itself: every reference is already in it
        assert (same_job["accepted"], same_job["duplicates"]) == (0, 12)
    finally:
        engine.dispose()
