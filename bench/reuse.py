"""A rerun of an unchanged, fully moderated job: billed calls and wall time.

    .venv/bin/python bench/reuse.py [--refs 100000] [--db sqlite:////tmp/reuse.db | postgresql://...]
    .venv/bin/python bench/reuse.py --oss [--refs 100000]

``--oss``: the archive is an OSS prefix instead of a URL list, the emulator's synthetic bucket
of ``--refs`` objects (``--oss-synthetic``). The first job is a real ``imgmod enqueue
oss://synthetic/`` (listed through the OSS SDK, each row with its ETag and size); it is then
made fully moderated by storing the answers through bulk SQL as below, not by a real first run
(100,000 calls at the emulator's QPS cap would take far longer than the rerun being measured,
and the rerun reads only the stored answers). The timed rerun is ``imgmod run oss://synthetic/
--job rerun`` (no ``--reuse-urls``: OSS objects are reused by (bucket, key, ETag) by default).

Builds a job of ``--refs`` URLs that is fully moderated (the producer inserts it; its answers are
then stored in bulk SQL, as 100,000 workers' answers would be: the vendor's risk sample with one
label), then times one real ``imgmod run INPUT --job rerun --reuse-urls`` against the emulator
and a private ``redis-server``, no worker running. Target: 0 billed calls, under a minute.
Prints the wall time of the whole process (start-up included), the emulator's billed count, the
rerun's states and reused count, and a fixed CPU probe so figures from other machines compare.
The database must be new or empty (a PostgreSQL URL: the database must exist).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from broker_memory import cpu_probe
from stack import loadavg

from worker import store
from worker.emulator import TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET
from worker.processes import private_redis, running_emulator
from worker.producer import enqueue_records, reuse_scope
from worker.sources import read_inputs

SERVICE = "baselineCheck_global"
OSS_REGION = "cn-hangzhou"
IMGMOD = [sys.executable, "-m", "worker.cli"]
INFO = "customImage,textInImage"
RAW = {
    "Code": 200,
    "Msg": "OK",
    "RequestId": "BENCH",
    "Data": {"RiskLevel": "high", "Result": [{"Label": "violent_explosion", "Confidence": 81.2}]},
}


def moderate_in_bulk(engine: sa.Engine, job: store.Job) -> None:
    """Store a Code-200 answer for every row of ``job`` with a few set-based statements."""
    moment = datetime.now(timezone.utc)
    i = store.items
    with engine.begin() as conn:
        ids = list(conn.execute(sa.select(i.c.id).where(i.c.job_id == job.id)).scalars())
        conn.execute(
            sa.insert(store.results),
            [
                {
                    "item_id": n,
                    "job_id": job.id,
                    "service": SERVICE,
                    "request_id": f"REQ-{n}",
                    "code": "200",
                    "msg": "OK",
                    "risk_level": "high",
                    "raw": RAW,
                    "moderated_at": moment,
                }
                for n in ids
            ],
        )
        r = store.results
        conn.execute(
            sa.insert(store.result_labels).from_select(
                ["result_id", "job_id", "item_id", "label", "confidence", "risk_level"],
                sa.select(
                    r.c.id,
                    r.c.job_id,
                    r.c.item_id,
                    sa.literal("violent_explosion"),
                    sa.literal(81.2),
                    sa.literal("high"),
                ).where(r.c.job_id == job.id),
            )
        )
        conn.execute(sa.update(i).where(i.c.job_id == job.id).values(state="done", last_code="200"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refs", type=int, default=100_000)
    parser.add_argument("--db", default=None)
    parser.add_argument("--oss", action="store_true", help="an OSS prefix, not a URL list")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, private_redis() as redis, ExitStack() as resources:
        (Path(tmp) / "oss").mkdir()
        oss = {"oss_root": Path(tmp) / "oss", "oss_region": OSS_REGION}
        synthetic = {"oss_synthetic": (f"synthetic={args.refs}",)} if args.oss else {}
        emu = resources.enter_context(running_emulator(**oss, **synthetic))
        db = args.db or f"sqlite:///{tmp}/reuse.db"
        env = {
            **os.environ,
            "IMGMOD_DATABASE_URL": db,
            "IMGMOD_BROKER_URL": redis.url,
            "IMGMOD_ENDPOINT": emu.url,
            "IMGMOD_OSS_ENDPOINT": emu.oss_url,
            "IMGMOD_INFO_TYPE": INFO,
            "ALIBABA_CLOUD_ACCESS_KEY_ID": TEST_ACCESS_KEY_ID,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": TEST_ACCESS_KEY_SECRET,
        }
        store.upgrade(db)
        engine = store.make_engine(db)
        started = time.perf_counter()
        if args.oss:
            target, more = "oss://synthetic/", ["--oss-region", OSS_REGION]
            subprocess.run(
                [*IMGMOD, "enqueue", target, *more, "--job", "first"],
                env=env,
                check=True,
                capture_output=True,
            )
            first = store.get_job(engine, "first")
            assert first is not None
        else:
            source = Path(tmp) / "archive.txt"
            with source.open("w") as fh:
                for n in range(args.refs):
                    fh.write(f"https://images.example.com/archive/{n:09d}.jpg\n")
            target, more = str(source), ["--reuse-urls"]
            first = store.get_or_create_job(engine, "first", SERVICE, INFO)
            enqueue_records(
                engine,
                first,
                read_inputs([str(source)]),
                lambda: 0,
                reuse=reuse_scope(first, rescan=False, reuse_urls=True),
            )
        moderate_in_bulk(engine, first)
        print(f"setup: {args.refs} references moderated in {time.perf_counter() - started:.1f} s")

        command = [*IMGMOD, "run", target, *more, "--job", "rerun"]
        started = time.perf_counter()
        done = subprocess.run(
            [*command, "--timeout", "300"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - started
        rerun = store.get_job(engine, "rerun")
        assert rerun is not None, done.stdout + done.stderr
        counts = {k: v for k, v in store.state_counts(engine, rerun.id).items() if v}
        reused = (
            engine.connect()
            .execute(
                sa.select(sa.func.count()).where(
                    store.items.c.job_id == rerun.id, store.items.c.reused_from.is_not(None)
                )
            )
            .scalar_one()
        )
        print(f"rerun: exit {done.returncode}, {wall:.1f} s wall ({args.refs / wall:,.0f} refs/s)")
        print(f"rerun: states {counts}, reused {reused}, billed {emu.stats()['billed']}")
        print(f"cpu probe: {cpu_probe():.0f} ms, load average {loadavg()}")
        engine.dispose()


if __name__ == "__main__":
    main()
