"""What a budget reservation costs the worker, and that the cap holds under contention.

    .venv/bin/python bench/budget.py [--calls 20000] [--threads 64]

Against a private redis-server and a SQLite ledger (only read when a counter must be seeded):

1. CPU: one thread reserves ``--calls`` units (daily and job caps both set, far away), each
   followed by a give-back on every tenth (a non-billed answer), and one ledger count per
   billed call; prints this process's CPU (user+sys) per reservation, the target being
   <= 0.2 ms, and the wall time per reservation (one Redis round trip).
2. Contention: ``--threads`` threads race for a daily budget of 1,000 with 3,000 attempts; the
   units granted must be exactly 1,000.

Prints the CPU probe (ms for a fixed pure-Python loop, from bench/broker_memory.py) and the
load average, since the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from broker_memory import cpu_probe  # noqa: E402
from stack import loadavg  # noqa: E402

from worker import store  # noqa: E402
from worker.budget import Budget, Exhausted, Ledger, Reservation  # noqa: E402
from worker.processes import private_redis  # noqa: E402


def cpu_per_reservation(
    budget: Budget, ledger: Ledger, job_id: int, calls: int
) -> tuple[float, float]:
    """(CPU s, wall s) per reservation, including the give-backs and ledger counts."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(calls):
        got = budget.reserve(job_id, "bench-job", 10**9)
        assert isinstance(got, Reservation), got
        if i % 10 == 0:
            budget.give_back("bench-job", got)
        else:
            ledger.billed(job_id, "baselineCheck_global", got)
    return (time.process_time() - cpu0) / calls, (time.perf_counter() - wall0) / calls


def race(url: str, database: str, threads: int, cap: int, attempts: int) -> int:
    """Units granted to ``threads`` threads making ``attempts`` reservations against ``cap``
    (a fresh ledger: the day's counter is seeded from it, at 0)."""
    store.upgrade(database)
    engine = store.make_engine(database)
    client = redis.Redis.from_url(url, max_connections=threads + 4)
    budget = Budget(client, engine, cap, prefix="race")
    granted = [0] * threads
    per_thread = attempts // threads

    def one(n: int) -> None:
        for _ in range(per_thread):
            if isinstance(budget.reserve(1, "race-job", None), Reservation):
                granted[n] += 1

    pool = [threading.Thread(target=one, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    engine.dispose()
    return sum(granted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=64)
    args = parser.parse_args()
    print(f"CPU probe {cpu_probe():.0f} ms; load average {loadavg()}")
    with private_redis() as server, tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        store.upgrade(url)
        engine = store.make_engine(url)
        job = store.get_or_create_job(engine, "bench", "baselineCheck_global", "")
        client = redis.Redis.from_url(server.url)
        budget = Budget(client, engine, daily_cap=10**9)
        ledger = Ledger(engine)
        budget.reserve(job.id, "bench-job", 10**9)  # seeds both counters once
        cpu, wall = cpu_per_reservation(budget, ledger, job.id, args.calls)
        ledger.flush()
        print(
            f"reservation: {1000 * cpu:.3f} ms CPU, {1000 * wall:.3f} ms wall per call "
            f"({args.calls:,} calls, 1 in 10 given back; target <= 0.2 ms CPU)"
        )
        attempts, cap = 3_000, 1_000
        got = race(server.url, f"sqlite:///{Path(tmp) / 'race.db'}", args.threads, cap, attempts)
        verdict = "holds" if got == cap else "BROKEN"
        print(
            f"contention: {args.threads} threads, {attempts:,} attempts, cap {cap:,}: "
            f"{got:,} granted ({verdict})"
        )
        exhausted = budget.reserve(job.id, "bench-job", 1)
        assert isinstance(exhausted, Exhausted)
        engine.dispose()
    print(f"load average after {loadavg()}")


if __name__ == "__main__":
    main()
