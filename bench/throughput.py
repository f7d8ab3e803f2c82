"""Does a whole job run at the account's QPS cap, and what does each image cost the worker?

    .venv/bin/python bench/throughput.py [--n 5000] [--qps 100] [--latency-ms 300]
        [--jitter-ms 100] [--db sqlite|postgresql|both] [--workers 1] [--concurrency 128]
        [--margin 0.98] [--loglevel INFO]

Everything is real except the API: the emulator (cap ``--qps``, latency + uniform jitter) and
the sample image server, a private ``redis-server`` (broker and limiter), ``--workers`` Celery
worker processes, a fresh SQLite file or PostgreSQL database, and ``imgmod enqueue`` over a
file of N distinct image URLs. The workers are started first; the clock runs from the first
row inserted to the last result stored.

Prints wall time, images/s, the ratio to the cap (ideal N/Q seconds over actual), throttled
(403) calls, billed calls per distinct image, worker CPU ms per image (utime+stime from /proc)
and peak RSS per worker (VmHWM). ``--margin`` sets the share of the cap the workers' limiter
runs at (the code's QPS_MARGIN is 0.98) by scaling IMGMOD_QPS, to show what the margin costs.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from broker_memory import cpu_probe
from stack import (
    cpu_seconds,
    fresh_database,
    imgmod,
    job_span,
    loadavg,
    peak_rss_mb,
    pipeline_env,
    row_counts,
)

from worker import store
from worker.limits import QPS_MARGIN
from worker.processes import (
    EmulatorHandle,
    ImageServerHandle,
    private_redis,
    running_emulator,
    running_image_server,
    start_worker,
)

EXTENSIONS = ("png", "jpg", "gif", "bmp", "webp")


@dataclass(frozen=True)
class Figures:
    db: str
    n: int
    qps: float
    wall: float
    throttled: int
    calls: int
    billed: int
    distinct_billed: int
    max_billed_per_image: int
    worker_cpu: float
    worker_rss_mb: list[float]
    other_cpu: dict[str, float]
    states: dict[str, int]

    def report(self) -> str:
        ideal = self.n / self.qps
        rows = [
            f"[{self.db}] {self.n} images, cap {self.qps:g}/s",
            f"  wall, first row -> last result  {self.wall:9.2f} s   (ideal {ideal:.2f} s)",
            f"  images/s                        {self.n / self.wall:9.2f}",
            f"  ratio to the cap                {ideal / self.wall:9.3f}",
            f"  throttled (403) calls           {self.throttled:9d}   "
            f"({100 * self.throttled / max(1, self.calls):.2f}% of {self.calls} calls)",
            f"  billed per distinct image       {self.billed / max(1, self.n):9.3f}   "
            f"({self.billed} billed, {self.distinct_billed} images, max "
            f"{self.max_billed_per_image} per image)",
            f"  worker CPU per image            {1000 * self.worker_cpu / self.n:9.3f} ms",
            "  peak RSS per worker             "
            + ", ".join(f"{mb:.0f} MiB" for mb in self.worker_rss_mb),
            "  other CPU per image (ms)        "
            + ", ".join(f"{k} {1000 * v / self.n:.2f}" for k, v in self.other_cpu.items()),
            f"  final states                    {self.states}",
        ]
        return "\n".join(rows)


def write_input(path: Path, images: ImageServerHandle, n: int) -> None:
    with path.open("w") as fh:
        for i in range(n):
            fh.write(images.image_url(i, EXTENSIONS[i % len(EXTENSIONS)]) + "\n")


def run_one(
    db: str,
    args: argparse.Namespace,
    emulator: EmulatorHandle,
    images: ImageServerHandle,
    broker_url: str,
    redis_pid: int,
    tmp: Path,
) -> Figures:
    with fresh_database(db) as url:
        env = pipeline_env(url, broker_url, emulator.url, args.qps * args.margin / QPS_MARGIN)
        env.update(
            IMGMOD_LOG_LEVEL=args.loglevel,
            IMGMOD_WORKER_CONCURRENCY=str(args.concurrency),
        )
        if args.profile:
            env.update(
                PYTHONPATH=str(Path(__file__).resolve().parent / "profiling"),
                IMGMOD_BENCH_PROFILE=f"{args.profile}.{db}",
            )
        workers = [
            start_worker(
                env,
                tmp / f"{db}-worker{i}.log",
                concurrency=args.concurrency,
                hostname=f"bench{i}-{uuid.uuid4().hex[:6]}@%h",
            )
            for i in range(args.workers)
        ]
        source = tmp / f"{db}-input.txt"
        write_input(source, images, args.n)
        emulator.reset()
        watched = {
            "emulator": emulator.process.pid,
            "images": images.process.pid,
            "redis": redis_pid,
        }
        cpu0 = {name: cpu_seconds(pid) for name, pid in watched.items()}
        worker_cpu0 = sum(cpu_seconds(w.process.pid) for w in workers)
        children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        enqueue = imgmod(env, "enqueue", str(source), "--job", "bench")
        engine = store.make_engine(url)
        deadline = time.monotonic() + args.n / args.qps * 3 + 120
        enqueued = False
        while True:
            if not enqueued and enqueue.poll() is not None:
                output = enqueue.stdout.read().decode() if enqueue.stdout else ""
                if enqueue.returncode != 0:
                    raise RuntimeError(f"imgmod enqueue failed:\n{output}")
                enqueued = True
            rows, still_open = row_counts(engine)
            if enqueued and rows >= args.n and still_open == 0:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{still_open} of {rows} rows still open")
            time.sleep(0.5)
        worker_cpu = sum(cpu_seconds(w.process.pid) for w in workers) - worker_cpu0
        other = {name: cpu_seconds(pid) - cpu0[name] for name, pid in watched.items()}
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        other["enqueue"] = (children.ru_utime + children.ru_stime) - (
            children0.ru_utime + children0.ru_stime
        )
        rss = [peak_rss_mb(w.process.pid) for w in workers]
        stats = emulator.stats()
        first, last, _results, states = job_span(engine)
        engine.dispose()
        for w in workers:
            w.terminate(timeout=60)
    billed_by_image: dict[str, int] = stats["billed_by_image"]
    by_code: dict[str, int] = stats["by_code"]
    return Figures(
        db=db,
        n=args.n,
        qps=args.qps,
        wall=last - first,
        throttled=int(by_code.get("403", 0)),
        calls=sum(by_code.values()),
        billed=int(stats["billed"]),
        distinct_billed=len(billed_by_image),
        max_billed_per_image=max(billed_by_image.values(), default=0),
        worker_cpu=worker_cpu,
        worker_rss_mb=rss,
        other_cpu=other,
        states=states,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--qps", type=float, default=100.0)
    parser.add_argument("--latency-ms", type=float, default=300.0)
    parser.add_argument("--jitter-ms", type=float, default=100.0)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument(
        "--margin", type=float, default=QPS_MARGIN, help="share of the cap the limiter runs at"
    )
    parser.add_argument(
        "--loglevel", default="INFO", help="IMGMOD_LOG_LEVEL (Celery's own stays INFO)"
    )
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="cProfile the worker (all threads) into FILE.<db>; CPU figures are then inflated",
    )
    args = parser.parse_args()
    dbs = ("sqlite", "postgresql") if args.db == "both" else (args.db,)
    print(
        f"throughput: n={args.n} qps={args.qps:g} latency={args.latency_ms:g}+0..{args.jitter_ms:g}"
        f" ms, {args.workers} worker(s) x {args.concurrency} threads, limiter at "
        f"{args.margin:g} x cap, log level {args.loglevel}; load average {loadavg()}; "
        f"CPU probe {cpu_probe():.0f} ms",
        flush=True,
    )
    with (
        tempfile.TemporaryDirectory(prefix="imgmod-bench-") as tmp,
        private_redis() as redis_server,
        running_image_server() as images,
        running_emulator(
            qps=args.qps, latency_ms=args.latency_ms, jitter_ms=args.jitter_ms
        ) as emulator,
    ):
        assert redis_server.process is not None
        for _ in range(args.repeat):
            for db in dbs:
                figures = run_one(
                    db,
                    args,
                    emulator,
                    images,
                    redis_server.url,
                    redis_server.process.pid,
                    Path(tmp),
                )
                print(figures.report(), flush=True)
                print(f"  load average after              {loadavg()}", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
