"""How fast ``imgmod enqueue`` takes a million references, in how much memory, and how soon the
first result lands.

    .venv/bin/python bench/enqueue.py [--lines 1000000] [--db sqlite|postgresql|both]
        [--profile-lines 100000]

A private ``redis-server`` is the broker (flushed between runs and gone at the end, so the
million messages are discarded), the emulator (cap 100/s, 300 ms) and one worker run
meanwhile, as in production. For each database: references accepted per second (wall time of
the whole ``imgmod enqueue`` process, Python start-up included), its peak RSS (``ru_maxrss``
from wait4), the time from starting it to the first ``done`` row, and what the broker holds
after. ``--profile-lines`` also profiles the producer in-process (read, validate, insert,
publish, mark queued) over that many lines and prints where its CPU goes per line.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
import sqlalchemy as sa
from broker_memory import cpu_probe
from stack import fresh_database, loadavg, pipeline_env

from worker import store
from worker.processes import private_redis, running_emulator, running_image_server, start_worker

EXTENSIONS = ("png", "jpg", "gif", "bmp", "webp")


def write_input(path: Path, base_url: str, lines: int) -> None:
    with path.open("w") as fh:
        for i in range(lines):
            fh.write(f"{base_url}/img/{i}.{EXTENSIONS[i % 5]}\n")


def first_result_at(url: str) -> float | None:
    engine = store.make_engine(url)
    try:
        with engine.connect() as conn:
            first = conn.execute(sa.select(sa.func.min(store.results.c.moderated_at))).scalar()
    finally:
        engine.dispose()
    return first.timestamp() if first else None


def run_enqueue(env: dict[str, str], source: Path) -> tuple[float, float, str, float, float]:
    """(wall seconds, peak RSS MiB, output, epoch start, CPU seconds) of one ``imgmod
    enqueue``."""
    started_epoch, started = time.time(), time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "enqueue", str(source), "--job", "bench"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output = b""
    assert process.stdout is not None
    output = process.stdout.read()
    _pid, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"imgmod enqueue failed:\n{output.decode()[-3000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    return wall, usage.ru_maxrss / 1024, output.decode(), started_epoch, cpu


def bench_db(db: str, args: argparse.Namespace, source: Path, tmp: Path) -> None:
    with (
        private_redis() as broker,
        running_emulator(qps=100, latency_ms=300, jitter_ms=100) as emulator,
        fresh_database(db) as url,
    ):
        env = pipeline_env(url, broker.url, emulator.url, 100.0)
        worker = start_worker(
            env, tmp / f"{db}-worker.log", concurrency=128, hostname=f"enq-{uuid.uuid4().hex[:6]}"
        )
        try:
            wall, rss, output, started, usage_cpu = run_enqueue(env, source)
            first = first_result_at(url)
        finally:
            worker.terminate(timeout=60)
        client = redis.Redis.from_url(broker.url)
        queued = client.llen("imgmod")
        memory = client.info("memory")["used_memory"] / 2**20
        client.close()
        print(f"[{db}] {output.strip().splitlines()[-1]}")
        print(f"  accepted/s (whole process)      {args.lines / wall:10,.0f}   ({wall:.1f} s)")
        print(f"  peak RSS of imgmod enqueue      {rss:10.0f} MiB")
        first_text = f"{first - started:10.2f} s" if first else "      none"
        print(f"  start of enqueue -> first done  {first_text}")
        print(f"  broker after: {queued:,} messages, {memory:,.0f} MiB used by Redis")
        cpu = usage_cpu
        print(f"  CPU of imgmod enqueue           {1e6 * cpu / args.lines:10.1f} us/reference")
        print(f"  cpu probe {cpu_probe():.0f} ms, load average {loadavg()}", flush=True)


def profile_producer(db: str, lines: int, tmp: Path) -> None:
    """The producer's time per line, by stage, in-process (cProfile wall time, inflated).
    cProfile sees the calling thread only: reading, validating and writing rows out happen in
    the read-ahead thread (worker.readahead) and show here as waits in the insert loop."""
    from worker.app import make_app
    from worker.producer import enqueue_records
    from worker.settings import load_settings
    from worker.sources import read_inputs
    from worker.window import Refiller

    source = tmp / "profile.txt"
    write_input(source, "http://127.0.0.1:9/x", lines)
    with private_redis() as broker, fresh_database(db) as url:
        os.environ["IMGMOD_BROKER_URL"] = broker.url
        app = make_app(load_settings())
        engine = store.make_engine(url)
        job = store.get_or_create_job(engine, "profile", "baselineCheck_global", "")
        profile = cProfile.Profile()
        started = time.perf_counter()
        profile.enable()
        window = Refiller(engine, app, lines)  # a window the size of the input: all published
        enqueue_records(engine, job, read_inputs([str(source)]), window.top_up)
        profile.disable()
        wall = time.perf_counter() - started
        engine.dispose()
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    own = sum(v[2] for (f, _l, _n), v in stats.items() if f.endswith(("sources.py", "params.py")))
    stages = {
        "to_new_item": ("producer.py", "to_new_item"),
        "store.insert_rows": ("store/inserts.py", "insert_rows"),
        "publish_ids": ("queue.py", "publish_ids"),
        "store.take_pending": ("store/items.py", "take_pending"),
        "store.add_counts": ("store/jobs.py", "add_counts"),
    }
    total = sum(v[2] for v in stats.values())
    print(
        f"[{db}] producer profile over {lines:,} lines: {lines / wall:,.0f} lines/s under cProfile"
    )
    print(f"  {1e6 * total / lines:.1f} us/line, of which (cumulative):")
    print(f"    {'read+validate (own time)':30s} {1e6 * own / lines:7.1f} us/line")
    for label, (filename, name) in stages.items():
        seconds = sum(v[3] for (f, _l, n), v in stats.items() if f.endswith(filename) and n == name)
        print(f"    {label:30s} {1e6 * seconds / lines:7.1f} us/line")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--profile-lines", type=int, default=0)
    args = parser.parse_args()
    dbs = ("sqlite", "postgresql") if args.db == "both" else (args.db,)
    print(f"enqueue: {args.lines:,} references; load average {loadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="imgmod-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with running_image_server() as images:
            source = tmp / "input.txt"
            write_input(source, images.url, args.lines)
            for db in dbs:
                if args.profile_lines:
                    profile_producer(db, args.profile_lines, tmp)
                bench_db(db, args, source, tmp)


if __name__ == "__main__":
    main()
