"""Listing a large OSS prefix from the emulator: objects recorded and queued per second, peak RSS.

    .venv/bin/python bench/oss_listing.py [--objects 1000000] [--window 20000]

Starts the emulator with a synthetic bucket of ``--objects`` PNGs (``--oss-synthetic``), a
private ``redis-server`` and a fresh SQLite database, then times one
``imgmod enqueue oss://synthetic/ --job bench`` (no worker: the window fills, the rest waits
``pending``). Prints objects/s (wall time of the whole process, start-up included), the
process's peak RSS (targets: >= 5,000 objects/s, <= 200 MB), the rows counted in SQL, and a
fixed CPU probe (:func:`broker_memory.cpu_probe`) so figures from other machines compare.
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
from stack import loadavg

from worker import store
from worker.emulator import TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET
from worker.processes import private_redis, running_emulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1_000_000)
    parser.add_argument("--window", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, private_redis() as redis:
        root = Path(tmp) / "oss"
        root.mkdir()
        db = f"sqlite:///{tmp}/bench.db"
        with running_emulator(
            oss_root=root, oss_region="cn-hangzhou", oss_synthetic=(f"synthetic={args.objects}",)
        ) as emulator:
            env = {
                "IMGMOD_DATABASE_URL": db,
                "IMGMOD_BROKER_URL": redis.url,
                "IMGMOD_ENDPOINT": emulator.url,
                "IMGMOD_OSS_ENDPOINT": emulator.oss_url,
                "IMGMOD_QUEUE_WINDOW": str(args.window),
                "ALIBABA_CLOUD_ACCESS_KEY_ID": TEST_ACCESS_KEY_ID,
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET": TEST_ACCESS_KEY_SECRET,
            }
            full = {**os.environ, **env}
            imgmod = [sys.executable, "-m", "worker.cli"]
            subprocess.run([*imgmod, "db", "upgrade"], env=full, check=True, capture_output=True)
            started = time.perf_counter()
            process = subprocess.Popen(
                [*imgmod, "enqueue", "oss://synthetic/", "--oss-region", "cn-hangzhou"]
                + ["--job", "bench"],
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
    print(f"objects listed and recorded: {recorded} ({queued} queued, the rest pending)")
    print(f"wall: {wall:.1f} s, {args.objects / wall:,.0f} objects/s (target >= 5,000)")
    print(f"peak RSS of imgmod enqueue: {usage.ru_maxrss / 1024:.0f} MiB (target <= 200)")
    print(f"cpu probe: {cpu_probe():.0f} ms, load average {loadavg()}")


if __name__ == "__main__":
    main()
