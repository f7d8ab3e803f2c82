"""A folder with byte-identical duplicates: billed calls must equal distinct contents.

    .venv/bin/python bench/folder_dupes.py [--files 10000] [--dupes 0.1] [--db URL]

Writes a folder of ``--files`` small PNGs of which ``--dupes`` (10 %) are byte-identical copies
of others under different names, then times one real ``imgmod run FOLDER --job bench`` with one
real Celery worker (64 threads) against the emulator (latency 50 ms, capped at 500 calls/s:
``IMGMOD_QPS=500``) and a private ``redis-server``, each file uploaded through the emulator's
DescribeUploadToken and OSS PutObject. The copies are waiters (worker.store.waiters): they take
the original's answer when it arrives, never a call. Prints the emulator's billed calls, the
distinct contents, the job's states and reused rows, the wall time of the whole run (start-up
included), and a fixed CPU probe so figures from other machines compare. SQLite unless ``--db``
(a PostgreSQL URL: the database must exist and be empty).
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
from worker.emulator.samples import png_bytes
from worker.processes import private_redis, running_emulator, start_worker

IMGMOD = [sys.executable, "-m", "worker.cli"]


def write_folder(top: Path, files: int, dupes: float) -> int:
    """``files`` PNGs under ``top``, the last ``dupes`` share copies of earlier ones; returns
    the number of distinct contents."""
    copies = int(files * dupes)
    distinct = files - copies
    for n in range(files):
        content = png_bytes(10_000 + (n if n < distinct else (n * 7919) % distinct))
        path = top / f"d{n % 50:02d}" / f"img{n:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return distinct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--dupes", type=float, default=0.1)
    parser.add_argument("--db", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, private_redis() as redis:
        base = Path(tmp)
        (base / "oss").mkdir()
        distinct = write_folder(base / "archive", args.files, args.dupes)
        emulator = running_emulator(qps=500, latency_ms=50, oss_root=str(base / "oss"))
        with emulator as emu:
            db = args.db or f"sqlite:///{tmp}/bench.db"
            env = {
                "IMGMOD_DATABASE_URL": db,
                "IMGMOD_BROKER_URL": redis.url,
                "IMGMOD_ENDPOINT": emu.url,
                "IMGMOD_OSS_ENDPOINT": emu.oss_url,
                "IMGMOD_QPS": "500",
                "ALIBABA_CLOUD_ACCESS_KEY_ID": TEST_ACCESS_KEY_ID,
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET": TEST_ACCESS_KEY_SECRET,
            }
            store.upgrade(db)
            worker = start_worker(env, base / "worker.log", concurrency=64)
            try:
                started = time.perf_counter()
                done = subprocess.run(
                    [*IMGMOD, "run", str(base / "archive"), "--job", "bench"],
                    env={**os.environ, **env},
                    capture_output=True,
                    text=True,
                )
                wall = time.perf_counter() - started
            finally:
                worker.terminate()
            stats = emu.stats()
        engine = store.make_engine(db)
        with engine.connect() as conn:
            items = store.items
            by_state = sa.select(items.c.state, sa.func.count()).group_by(items.c.state)
            states = dict(conn.execute(by_state).all())
            reused = conn.execute(
                sa.select(sa.func.count()).where(items.c.reused_from.is_not(None))
            ).scalar_one()
        engine.dispose()
    print(f"imgmod run exit {done.returncode}; {done.stdout.strip().splitlines()[:1]}")
    print(f"files {args.files}, distinct contents {distinct}, billed calls {stats.get('billed')}")
    print(f"states {states}, reused {reused}")
    print(f"wall {wall:.1f} s ({args.files / wall:.0f} files/s)")
    print(f"cpu probe {cpu_probe():.0f} ms, load {loadavg()}")


if __name__ == "__main__":
    main()
