"""``imgmod enqueue oss://BUCKET/PREFIX`` against the emulator's OSS, through the real OSS SDK:
one row per object with its ETag, size and LastModified; filters; a denied bucket as one line;
and ``kill -9`` mid-listing, then the same command again: no duplicate, no gap."""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.commands import run_imgmod, start_imgmod
from tests.support.emulator import running_emulator
from worker import store
from worker.emulator import TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET
from worker.processes import wait_until

pytestmark = pytest.mark.service

REGION = "cn-hangzhou"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture
def oss_root(tmp_path) -> Path:
    bucket = tmp_path / "oss" / REGION / "photos"
    for i in range(30):
        (bucket / "in" / f"{i:02d}.png").parent.mkdir(parents=True, exist_ok=True)
        (bucket / "in" / f"{i:02d}.png").write_bytes(PNG + bytes([i]))
    (bucket / "in" / "UPPER.JPG").write_bytes(PNG)
    (bucket / "in" / "notes.txt").write_bytes(b"not an image")
    (bucket / "in" / "empty.png").write_bytes(b"")
    (bucket / "out" / "x.png").parent.mkdir(parents=True)
    (bucket / "out" / "x.png").write_bytes(PNG)
    (tmp_path / "oss" / REGION / "secret").mkdir()
    (tmp_path / "oss" / REGION / "secret" / "a.png").write_bytes(PNG)
    return tmp_path / "oss"


@pytest.fixture
def env(oss_root, sqlite_url, redis_url):
    with running_emulator(
        oss_root=oss_root,
        oss_region=REGION,
        oss_synthetic=("synthetic=30000",),
        oss_deny_list=("secret",),
    ) as emulator:
        env = {
            "IMGMOD_DATABASE_URL": sqlite_url,
            "IMGMOD_BROKER_URL": redis_url,
            "IMGMOD_ENDPOINT": emulator.url,
            "IMGMOD_OSS_ENDPOINT": emulator.oss_url,
            "ALIBABA_CLOUD_ACCESS_KEY_ID": TEST_ACCESS_KEY_ID,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": TEST_ACCESS_KEY_SECRET,
        }
        assert run_imgmod(env, "db", "upgrade").returncode == 0
        yield env


def rows(env, job: str) -> list[sa.Row]:
    engine = store.make_engine(env["IMGMOD_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(store.items)
                    .join(store.jobs, store.jobs.c.id == store.items.c.job_id)
                    .where(store.jobs.c.name == job)
                )
            )
    finally:
        engine.dispose()


def test_enqueue_records_one_oss_row_per_object_with_its_listing(env, oss_root):
    done = run_imgmod(env, "enqueue", "oss://photos/in/", "--oss-region", REGION, "--job", "j")
    assert done.returncode == 0, done.stderr
    got = {r.oss_object or r.raw_input: r for r in rows(env, "j")}
    empty = "oss://photos/in/empty.png"  # rejected: its key is in raw_input
    assert set(got) == {f"in/{i:02d}.png" for i in range(30)} | {"in/UPPER.JPG", empty}
    one = got["in/07.png"]
    body = (oss_root / REGION / "photos" / "in" / "07.png").read_bytes()
    assert (one.kind, one.oss_bucket, one.oss_region, one.state) == (
        "oss",
        "photos",
        REGION,
        one.state,
    )
    assert one.etag.lower() == hashlib.md5(body).hexdigest() and one.size == len(body)
    assert one.last_modified is not None
    assert got[empty].state == "rejected" and "empty (0 bytes)" in got[empty].last_error
    assert "1 listed objects skipped by the filters" in done.stdout  # notes.txt


def test_filters_and_modified_since_skip_without_recording(env):
    done = run_imgmod(
        env, "enqueue", "oss://photos/", "--oss-region", REGION, "--job", "f",
        "--include", "*.png", "--exclude", "in/1*",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    keys = {r.oss_object for r in rows(env, "f")}
    assert "out/x.png" in keys and "in/UPPER.JPG" not in keys and "in/12.png" not in keys
    later = run_imgmod(
        env, "enqueue", "oss://photos/", "--oss-region", REGION, "--job", "g",
        "--modified-since", "2999-01-01",
    )  # fmt: skip
    assert later.returncode == 0, later.stderr
    assert rows(env, "g") == []


def test_a_bucket_without_list_permission_is_one_line(env):
    done = run_imgmod(env, "enqueue", "oss://secret/", "--oss-region", REGION, "--job", "d")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "'secret'" in lines[0] and "oss:ListObjects" in lines[0]


def test_kill_9_mid_listing_then_again_no_duplicate_no_gap(env):
    args = ("enqueue", "oss://synthetic/", "--oss-region", REGION, "--job", "k")
    first = start_imgmod(env, *args)
    try:
        wait_until(lambda: len(rows(env, "k")) >= 3000, 120, "a few pages recorded")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
    partial = len(rows(env, "k"))
    assert partial < 30000, "the listing finished before the kill; nothing was resumed"
    again = run_imgmod(env, *args, timeout=600)
    assert again.returncode == 0, again.stderr
    keys = [r.oss_object for r in rows(env, "k")]
    assert len(keys) == len(set(keys)) == 30000
