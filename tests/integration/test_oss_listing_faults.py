"""OSS listing faults mid-prefix, through the real OSS SDK against the emulator and a real
``imgmod enqueue`` subprocess.

Why: a nightly listing of millions of objects meets OSS 5xx answers and reset connections; the
promise is that they are retried with backoff and the listing still records every object exactly
once, and that a fault outlasting the retries stops the command with one line (exit 2) while
the same command run again continues from the saved continuation point, not from the start.
Counts come from the rows (every key once) and from the emulator's own OSS counters.
"""

from __future__ import annotations

import subprocess

import pytest
import sqlalchemy as sa

from tests.support.commands import run_imgmod, start_imgmod
from tests.support.emulator import Emulator, running_emulator
from worker import store
from worker.emulator import TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET
from worker.oss import MAX_KEYS
from worker.processes import wait_until
from worker.store.schema import listings

pytestmark = pytest.mark.service

REGION = "cn-hangzhou"
OBJECTS = 40_000  # 40 pages of 1,000: listing takes seconds, time to inject faults mid-prefix
PAGES = OBJECTS // MAX_KEYS


@pytest.fixture
def emulator(tmp_path):
    (tmp_path / "oss" / REGION).mkdir(parents=True)
    with running_emulator(
        oss_root=tmp_path / "oss", oss_region=REGION, oss_synthetic=(f"synthetic={OBJECTS}",)
    ) as emu:
        yield emu


@pytest.fixture
def env(emulator, sqlite_url, redis_url):
    env = {
        "IMGMOD_DATABASE_URL": sqlite_url,
        "IMGMOD_BROKER_URL": redis_url,
        "IMGMOD_ENDPOINT": emulator.url,
        "IMGMOD_OSS_ENDPOINT": emulator.oss_url,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": TEST_ACCESS_KEY_ID,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": TEST_ACCESS_KEY_SECRET,
    }
    assert run_imgmod(env, "db", "upgrade").returncode == 0
    return env


@pytest.fixture
def engine(sqlite_url):
    engine = store.make_engine(sqlite_url)
    yield engine
    engine.dispose()


def counts(engine, job: str) -> tuple[int, int]:
    """(rows, distinct object keys) of the job."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(
                sa.func.count(store.items.c.id),
                sa.func.count(sa.distinct(store.items.c.oss_object)),
            )
            .join(store.jobs, store.jobs.c.id == store.items.c.job_id)
            .where(store.jobs.c.name == job)
        ).one()
    return int(row[0]), int(row[1])


def listed_saved(engine, job: str) -> tuple[int, bool]:
    """What the job's saved listing says: objects listed before the continuation point, done."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(listings.c.listed, listings.c.done)
            .join(store.jobs, store.jobs.c.id == listings.c.job_id)
            .where(store.jobs.c.name == job)
        ).one()
    return int(row.listed), bool(row.done)


def oss_counts(emu: Emulator) -> dict[str, int]:
    return {k: int(v) for k, v in emu.stats()["oss"].items()}


def enqueue_args(job: str) -> tuple[str, ...]:
    return ("enqueue", "oss://synthetic/", "--oss-region", REGION, "--job", job)


def start_and_wait_for_first_pages(env, engine, job: str) -> subprocess.Popen[str]:
    """``imgmod enqueue`` started, returned once its first pages are recorded (not finished)."""
    proc = start_imgmod(env, *enqueue_args(job))
    try:
        wait_until(
            lambda: counts(engine, job)[0] >= 2 * MAX_KEYS or proc.poll() is not None,
            120,
            "the first pages recorded",
        )
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    return proc


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


def test_500_503_and_a_reset_mid_prefix_are_retried_and_every_object_lands_once(
    env, emulator, engine
):
    proc = start_and_wait_for_first_pages(env, engine, "faults")
    emulator.configure(oss_list_fault_500=1, oss_list_fault_503=1, oss_list_fault_reset=1)
    recorded_at_fault = counts(engine, "faults")[0]
    code, out, err = finish(proc)

    assert recorded_at_fault < OBJECTS, "the listing ended before the faults; none was mid-prefix"
    assert code == 0, err
    assert "Traceback" not in err
    stats = oss_counts(emulator)
    assert (stats.get("list_fault_500"), stats.get("list_fault_503")) == (1, 1), stats
    assert stats.get("list_fault_reset") == 1, stats
    assert counts(engine, "faults") == (OBJECTS, OBJECTS)  # 0 duplicates, 0 missing
    assert listed_saved(engine, "faults") == (OBJECTS, True)
    # every page once, plus one retry per fault (the read-ahead never fetches a page twice)
    assert stats["list"] == PAGES + 3, stats


@pytest.mark.parametrize(
    ("knob", "words"),
    [
        ("oss_list_fault_503", ("503", "again")),  # OSS away for good, as far as retries go
        ("oss_list_fault_403", ("403", "oss:ListObjects")),  # permission taken away mid-prefix
    ],
)
def test_a_fault_outlasting_the_retries_stops_with_one_line_and_the_rerun_resumes(
    env, emulator, engine, knob, words
):
    proc = start_and_wait_for_first_pages(env, engine, "outage")
    emulator.configure(**{knob: 10_000})
    code, out, err = finish(proc)

    assert code == 2, (code, err)
    assert "Traceback" not in err
    # stderr also carries the plain progress lines ("enqueue: N lines, ..."); the error is one
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("enqueue:")]
    assert len(lines) == 1, err
    assert "oss://synthetic" in lines[0] and all(w in lines[0] for w in words), lines[0]
    listed, done = listed_saved(engine, "outage")
    assert not done and MAX_KEYS <= listed < OBJECTS, listed
    rows, distinct = counts(engine, "outage")
    assert rows == distinct and rows >= listed  # what was recorded is recorded once

    emulator.configure(**{knob: 0})
    before = oss_counts(emulator)["list"]
    again = run_imgmod(env, *enqueue_args("outage"), timeout=300)
    assert again.returncode == 0, again.stderr
    second_run_lists = oss_counts(emulator)["list"] - before

    remaining_pages = (OBJECTS - listed) // MAX_KEYS
    assert second_run_lists == remaining_pages, (second_run_lists, remaining_pages, listed)
    assert counts(engine, "outage") == (OBJECTS, OBJECTS)
    assert listed_saved(engine, "outage") == (OBJECTS, True)
