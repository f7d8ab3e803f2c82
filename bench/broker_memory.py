"""How much Redis a large job needs with the publishing window, and whether refills keep up.

    .venv/bin/python bench/broker_memory.py [--lines 1000000] [--window 20000] [--drain 100000]
        [--drain-rate 5000]

1. ``imgmod enqueue`` of ``--lines`` references (SQLite, a private ``redis-server``, no worker):
   Redis ``used_memory`` before, its peak (Redis's own ``used_memory_peak``), the messages left
   in the queue, and references accepted per second (wall time of the whole process).
2. ``--drain N --drain-rate R``: a consumer pops N messages at R per second (LPOP up to 500
   at a time; it marks their rows done in SQL, as workers would) while a
   :class:`worker.window.RefillLoop` refills every second, as each worker does: the rate
   achieved, how often the consumer found fewer messages than it asked for (starved), the
   smallest and largest backlog seen, and Redis's peak.
3. A fixed CPU probe (a pure-Python loop), so figures from different machines compare.

The input file is written to a temp directory and everything is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
import sqlalchemy as sa
from stack import fresh_database, loadavg

from worker import store
from worker.processes import private_redis

MIB = 2**20


def cpu_probe() -> float:
    """Milliseconds for a fixed pure-Python loop (best of 3): this machine's speed, for
    comparing figures taken elsewhere."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(2_000_000):
            total += i * i % 7
        best = min(best, time.perf_counter() - started)
    return best * 1000


def write_input(path: Path, lines: int) -> None:
    with path.open("w") as fh:
        for i in range(lines):
            fh.write(f"http://127.0.0.1:9/img/{i}.png\n")


def enqueue(env: dict[str, str], source: Path) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "enqueue", str(source), "--job", "bench"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"imgmod enqueue failed:\n{done.stdout}{done.stderr[-3000:]}")
    return time.perf_counter() - started, done.stdout.strip().splitlines()[-1]


def drain(url: str, broker: str, window: int, messages: int, rate: float) -> None:
    """Consume ``messages`` at ``rate`` per second while a RefillLoop keeps the window topped
    up, as a worker's does; print how often the consumer found the queue empty (starved)."""
    import json

    from worker.app import make_app
    from worker.settings import load_settings
    from worker.window import Refiller, RefillLoop

    os.environ["IMGMOD_BROKER_URL"] = broker
    engine = store.make_engine(url)
    loop = RefillLoop(Refiller(engine, make_app(load_settings()), window))
    client = redis.Redis.from_url(broker)
    consumed, starved, smallest, largest = 0, 0, window, 0
    loop.start()
    started = time.perf_counter()
    try:
        while consumed < messages:
            ahead = consumed - rate * (time.perf_counter() - started)
            if ahead > 0:
                time.sleep(ahead / rate)  # pacing the consumer at the target rate
            want = min(500, messages - consumed)
            batch = client.lpop("imgmod", want) or []
            if len(batch) < want:
                starved += 1
            ids = [int(json.loads(m)["headers"]["argsrepr"].strip("(,)")) for m in batch]
            if ids:
                with engine.begin() as conn:
                    conn.execute(
                        sa.update(store.items).where(store.items.c.id.in_(ids)).values(state="done")
                    )
            consumed += len(batch)
            backlog = int(client.llen("imgmod"))
            smallest, largest = min(smallest, backlog), max(largest, backlog)
        wall = time.perf_counter() - started
    finally:
        loop.stop()
        engine.dispose()
    peak = int(client.info("memory")["used_memory_peak"])
    client.close()
    print(f"drain of {consumed:,} messages at a target of {rate:,.0f}/s with refills every 1 s:")
    print(
        f"  achieved                            {consumed / wall:10,.0f} messages/s ({wall:.1f} s)"
    )
    print(f"  consumer found the queue short      {starved:10,} times")
    print(f"  backlog seen: smallest {smallest:,}, largest {largest:,} (window {window:,})")
    print(f"  Redis used_memory_peak after        {peak / MIB:10.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--window", type=int, default=20_000)
    parser.add_argument("--drain", type=int, default=100_000, help="0: skip the drain phase")
    parser.add_argument("--drain-rate", type=float, default=5000.0, help="messages/s consumed")
    args = parser.parse_args()
    print(f"CPU probe: {cpu_probe():.0f} ms; load average {loadavg()}", flush=True)
    with (
        tempfile.TemporaryDirectory(prefix="imgmod-bench-") as tmp,
        private_redis() as broker,
        fresh_database("sqlite") as url,
    ):
        source = Path(tmp) / "input.txt"
        write_input(source, args.lines)
        client = redis.Redis.from_url(broker.url)
        before = int(client.info("memory")["used_memory"])
        env = {
            "IMGMOD_DATABASE_URL": url,
            "IMGMOD_BROKER_URL": broker.url,
            "IMGMOD_QUEUE_WINDOW": str(args.window),
        }
        wall, summary = enqueue(env, source)
        memory = client.info("memory")
        queued = int(client.llen("imgmod"))
        message = client.lindex("imgmod", 0) or b""
        client.close()
        print(f"enqueue of {args.lines:,} references, window {args.window:,}: {summary}")
        print(f"  accepted/s (whole process)          {args.lines / wall:10,.0f}   ({wall:.1f} s)")
        print(f"  Redis used_memory before            {before / MIB:10.1f} MiB")
        peak = int(memory["used_memory_peak"])
        print(f"  Redis used_memory_peak              {peak / MIB:10.1f} MiB")
        print(f"  peak above the empty server         {(peak - before) / MIB:10.1f} MiB")
        print(f"  messages in the queue after         {queued:10,}   ({len(message)} bytes each)")
        if args.drain:
            drain(url, broker.url, args.window, min(args.drain, args.lines), args.drain_rate)
    print(f"load average {loadavg()}")


if __name__ == "__main__":
    main()
