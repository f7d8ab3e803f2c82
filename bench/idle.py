"""What a worker costs per second when no call is made: its background duties, measured alone.

    .venv/bin/python bench/idle.py [--db sqlite|postgresql|both] [--rows 3000] [--groups 1]
        [--processes 0] [--seconds 20]

Why: ``bench/throughput.py`` divides a worker's whole CPU by the images, so what every process
does each second whatever the load (settling waiters, topping up the publishing window, looking
for rows whose message was lost, renewing leases) is part of its "CPU per image": at a 100/s
cap, 10 ms a second per process is 0.2 ms per image over two processes, a tenth of a bare call.
Here the same duties run with nothing to call: a fresh database holds ``--rows`` rows
``queued`` (a job whose messages are all out: the state in which the window refills and the
orphan look scan the most), the broker (a private ``redis-server``) holds none of their
messages, and ``--groups`` ``imgmod worker`` groups (simulated hosts) of ``--processes``
processes each run for ``--seconds``. Prints the CPU probe, the load average, and the workers'
CPU milliseconds per second in all and per process (utime+stime from /proc), once with no rows
and once with ``--rows``. The orphan grace (30 s) outlasts the measurement (20 s by default),
so no row is republished while measuring.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from broker_memory import cpu_probe
from stack import cpu_seconds, fresh_database, loadavg, pipeline_env
from throughput import start_group

from worker import store
from worker.orphans import ORPHAN_GRACE_S
from worker.processes import private_redis
from worker.store.items import NewItem
from worker.supervise import processes_for, usable_cores


def queued_without_messages(url: str, n: int) -> None:
    """``n`` rows of one job, ``queued`` with no message anywhere."""
    engine = store.make_engine(url)
    job = store.get_or_create_job(engine, "idle", "baselineCheck_global", "")
    rows = [
        NewItem(
            "url",
            f"u{i}",
            f"http://127.0.0.1:9/{i}.jpg",
            None,
            None,
            None,
            None,
            None,
            "x",
            i,
            "pending",
        )
        for i in range(n)
    ]
    for start in range(0, n, 5000):
        store.insert_items(engine, job.id, rows[start : start + 5000])
    with engine.begin() as conn:
        conn.execute(sa.update(store.items).values(state="queued"))
    engine.dispose()


def measure(url: str, broker: str, args: argparse.Namespace, tmp: Path) -> tuple[float, int]:
    """Workers' CPU ms per second over ``args.seconds``, and how many processes ran."""
    env = pipeline_env(url, broker, "http://127.0.0.1:9", 100.0)
    groups = [start_group(env, tmp / f"group{g}.log", args) for g in range(args.groups)]
    try:
        time.sleep(2.0)  # past the start-up's first look and refill: the steady state
        cpu0 = sum(cpu_seconds(w.process.pid) for w in groups)
        wall0 = time.monotonic()
        time.sleep(args.seconds)
        cpu = sum(cpu_seconds(w.process.pid) for w in groups) - cpu0
        wall = time.monotonic() - wall0
    finally:
        for w in groups:
            w.terminate()
    return 1000 * cpu / wall, processes_for(args.processes, usable_cores()) * args.groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="postgresql")
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--groups", type=int, default=1, help="imgmod worker groups (hosts)")
    parser.add_argument("--processes", type=int, default=0, help="per group (0: one per core)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.set_defaults(concurrency=0)  # start_group's: the setting's threads
    args = parser.parse_args()
    if args.seconds + 5 >= ORPHAN_GRACE_S:
        parser.error(f"--seconds must stay under the orphan grace ({ORPHAN_GRACE_S:g} s) - 5")
    dbs = ("sqlite", "postgresql") if args.db == "both" else (args.db,)
    print(
        f"idle: {args.groups} group(s), rows {args.rows}, {args.seconds:g} s; "
        f"load average {loadavg()}; CPU probe {cpu_probe():.0f} ms",
        flush=True,
    )
    with private_redis() as server, tempfile.TemporaryDirectory(prefix="imgmod-idle-") as tmp:
        for db in dbs:
            for rows in (0, args.rows):
                with fresh_database(db) as url:
                    if rows:
                        queued_without_messages(url, rows)
                    per_second, processes = measure(url, server.url, args, Path(tmp))
                print(
                    f"  [{db}] {rows:6d} rows queued: workers' CPU {per_second:6.1f} ms/s "
                    f"({per_second / processes:.1f} ms/s per process, {processes} processes)",
                    flush=True,
                )
    print(f"  load average after {loadavg()}")


if __name__ == "__main__":
    main()
