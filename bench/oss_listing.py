"""Listing a large OSS prefix from the emulator: objects recorded and queued per second, peak RSS.

    .venv/bin/python bench/oss_listing.py [--objects 1000000] [--window 20000]
        [--db sqlite|postgresql|both] [--profile FILE]

Starts the emulator with a synthetic bucket of ``--objects`` PNGs (``--oss-synthetic``), a
private ``redis-server`` and a fresh database (a temp SQLite file, or a new PostgreSQL database
dropped afterwards), then times one ``imgmod enqueue oss://synthetic/ --job bench`` (no worker:
the window fills, the rest waits ``pending``). Prints objects/s (wall time of the whole process,
start-up included), the process's peak RSS (targets: >= 5,000 objects/s, <= 200 MB), the rows
counted in SQL, and a fixed CPU probe (:func:`broker_memory.cpu_probe`) so figures from other
machines compare. ``--profile FILE`` runs the enqueue under per-thread cProfile
(``bench/profiling/sitecustomize.py``; read it with ``bench/profiling/summary.py FILE.DB``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from broker_memory import cpu_probe
from stack import fresh_database, loadavg

from worker import store
from worker.emulator import TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET
from worker.processes import private_redis, running_emulator

PROFILING = Path(__file__).resolve().parent / "profiling"


def bench_db(kind: str, args: argparse.Namespace, emulator_url: str, oss_url: str) -> None:
    with private_redis() as redis, fresh_database(kind) as db:
        env = {
            "IMGMOD_DATABASE_URL": db,
            "IMGMOD_BROKER_URL": redis.url,
            "IMGMOD_ENDPOINT": emulator_url,
            "IMGMOD_OSS_ENDPOINT": oss_url,
            "IMGMOD_QUEUE_WINDOW": str(args.window),
            "ALIBABA_CLOUD_ACCESS_KEY_ID": TEST_ACCESS_KEY_ID,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": TEST_ACCESS_KEY_SECRET,
        }
        if args.profile:
            paths = [str(PROFILING), os.environ.get("PYTHONPATH", "")]
            env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
            env["IMGMOD_BENCH_PROFILE"] = f"{args.profile}.{kind}"
        full = {**os.environ, **env}
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "enqueue", "oss://synthetic/"]
            + ["--oss-region", "cn-hangzhou", "--job", "bench"],
            env=full,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert process.stdout is not None
        output = process.stdout.read().decode(errors="replace")
        _pid, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"imgmod enqueue failed:\n{output[-3000:]}")
        engine = store.make_engine(db)
        with engine.connect() as conn:
            recorded = conn.execute(sa.select(sa.func.count()).select_from(store.items)).scalar()
            queued = conn.execute(
                sa.select(sa.func.count()).where(store.items.c.state == "queued")
            ).scalar()
        engine.dispose()
    cpu = usage.ru_utime + usage.ru_stime
    print(f"[{kind}] objects listed and recorded: {recorded} ({queued} queued, the rest pending)")
    print(f"  wall: {wall:.1f} s, {args.objects / wall:,.0f} objects/s (target >= 5,000)")
    print(f"  CPU of imgmod enqueue: {cpu:.1f} s ({1e6 * cpu / args.objects:.0f} us/object)")
    print(f"  peak RSS of imgmod enqueue: {usage.ru_maxrss / 1024:.0f} MiB (target <= 200)")
    print(f"  cpu probe: {cpu_probe():.0f} ms, load average {loadavg()}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1_000_000)
    parser.add_argument("--window", type=int, default=20_000)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--profile", help="cProfile the enqueue into FILE.sqlite / FILE.postgresql")
    args = parser.parse_args()
    kinds = ("sqlite", "postgresql") if args.db == "both" else (args.db,)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "oss"
        root.mkdir()
        with running_emulator(
            oss_root=root, oss_region="cn-hangzhou", oss_synthetic=(f"synthetic={args.objects}",)
        ) as emulator:
            for kind in kinds:
                bench_db(kind, args, emulator.url, emulator.oss_url)


if __name__ == "__main__":
    main()
