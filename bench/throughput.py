"""Does a whole job run at the account's QPS cap, and what does each image cost the worker?

    .venv/bin/python bench/throughput.py [--n 5000] [--qps 100] [--latency-ms 300]
        [--jitter-ms 100] [--db sqlite|postgresql|both] [--workers 1] [--processes 0]
        [--concurrency N] [--celery] [--margin 1.0] [--loglevel INFO] [--bare 400]
        [--ids-per-message N] [--lateness] [--by-thread] [--profile FILE]

Everything is real except the API: the emulator (cap ``--qps``, latency + uniform jitter) and
the sample image server, a private ``redis-server`` (broker and limiter), ``--workers``
worker groups (each one ``imgmod worker``, as a user starts it: ``--processes`` processes, 0 =
its default of one per core, ``--concurrency`` threads split over them, default
IMGMOD_WORKER_CONCURRENCY; two groups stand for two hosts sharing one Redis and one database),
a fresh SQLite file or PostgreSQL database, and ``imgmod enqueue`` over a file of N distinct
image URLs. ``--celery`` starts plain ``celery -A worker worker`` processes instead (each
``--concurrency`` threads, 128 if unset). The workers are started first; the clock runs from
the first row inserted to the last result stored.

Prints wall time, images/s, the ratio to the cap (ideal N/Q seconds over actual), throttled
(403) calls, billed calls per distinct image, worker CPU ms per image (utime+stime from /proc,
every process of every group) and peak RSS per worker process (VmHWM), and, measured in the
same run, the CPU of a bare signed API call (``--bare`` calls of imgmod's client from a
thread pool in this process, paced under the cap: no queue, no database; once before the job
and once after it, the mean of the two: single samples of a few seconds read 1.0-2.3 ms on one
box within an hour) and the ratio of the two. ``--margin`` scales IMGMOD_QPS (1.0: the
limiter's learned margin alone). ``--lateness`` turns on the workers' metrics endpoints and
prints how late calls left after their permits' slots (bench/lateness.py: the host's share of
the 403s); the metrics cost a little CPU. ``--by-thread`` splits the worker's CPU per image by
thread kind (``bench/profiling/sitecustomize.py`` names them for the kernel): the call threads
(client, permit, park) set beside the bare call, Celery's pool (claim and store), the consumer.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import lateness
import redis
import sqlalchemy as sa
from broker_memory import cpu_probe
from stack import (
    cpu_seconds,
    descendants,
    fresh_database,
    imgmod,
    job_span,
    loadavg,
    peak_rss_mb,
    pipeline_env,
    row_counts,
    thread_cpu,
)

from worker import store
from worker.client import ModerationClient
from worker.emulator import TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET
from worker.params import ImageRef
from worker.processes import (
    EmulatorHandle,
    ImageServerHandle,
    WorkerProcess,
    private_redis,
    running_emulator,
    running_image_server,
    start_worker,
    wait_until,
)
from worker.settings import Credentials
from worker.supervise import processes_for, usable_cores

EXTENSIONS = ("png", "jpg", "gif", "bmp", "webp")


@dataclass(frozen=True)
class Figures:
    db: str
    n: int
    qps: float
    wall: float
    first_result: float  # seconds from the first row inserted to the first result stored
    # The wall split in three (seconds): first row -> first call at the emulator, the first call
    # -> the last, the last call -> the last result stored; and first row -> first row queued.
    first_call: float
    calls_span: float
    tail: float
    first_queued: float
    per_second: tuple[int, ...]  # calls in each whole second at the emulator, in order
    throttled: int
    calls: int
    billed: int
    distinct_billed: int
    max_billed_per_image: int
    worker_cpu: float
    worker_sys: float  # of which in the kernel
    limiter_events: tuple[int, int, int]  # (403s forgiven, margin widened, rate cuts), logs
    # Seconds per call of the client alone, measured in the same run: before and after the
    # job (empty: not measured, --bare 0).
    bare_each: tuple[float, ...]
    worker_rss_mb: list[float]
    other_cpu: dict[str, float]
    states: dict[str, int]
    commands: dict[str, int]  # Redis commands by name over the job (enqueue to last result)
    lateness: dict[float, float]  # calls left within each bucket after their slot (--lateness)
    by_thread: dict[str, float]  # worker CPU seconds by thread kind over the job (--by-thread)

    @property
    def bare_cpu(self) -> float:
        """The bare call's CPU per call: the mean of its samples (0.0: not measured)."""
        return sum(self.bare_each) / len(self.bare_each) if self.bare_each else 0.0

    def report(self) -> str:
        ideal = self.n / self.qps
        rows = [
            f"[{self.db}] {self.n} images, cap {self.qps:g}/s",
            f"  wall, first row -> last result  {self.wall:9.2f} s   (ideal {ideal:.2f} s)",
            f"  images/s                        {self.n / self.wall:9.2f}",
            f"  ratio to the cap                {ideal / self.wall:9.3f}   (after the first "
            f"result, {self.first_result:.2f} s in: "
            f"{(self.n - 1) / self.qps / max(1e-9, self.wall - self.first_result):.3f})",
            f"  where the wall went             {self.first_call:9.2f} s to the first call "
            f"(rows queued at {self.first_queued:.2f} s), {self.calls_span:.2f} s of calls "
            f"({(self.calls - 1) / max(1e-9, self.calls_span):.1f}/s), {self.tail:.2f} s "
            "from the last call to the last result",
            f"  calls per second (whole seconds) {_spread(self.per_second, self.qps)}",
            f"  throttled (403) calls           {self.throttled:9d}   "
            f"({100 * self.throttled / max(1, self.calls):.2f}% of {self.calls} calls)",
            f"  limiter reactions to 403s       {self.limiter_events[0]:9d} forgiven, "
            f"{self.limiter_events[1]} margin widened, {self.limiter_events[2]} rate cuts",
            f"  billed per distinct image       {self.billed / max(1, self.n):9.3f}   "
            f"({self.billed} billed, {self.distinct_billed} images, max "
            f"{self.max_billed_per_image} per image)",
            f"  worker CPU per image            {1000 * self.worker_cpu / self.n:9.3f} ms   "
            f"(of which system {1000 * self.worker_sys / self.n:.3f} ms)",
            (
                f"  bare signed call CPU (client)   {1000 * self.bare_cpu:9.3f} ms   (worker / "
                f"bare = {self.worker_cpu / self.n / self.bare_cpu:.2f}x; before the job "
                + ", after ".join(f"{1000 * b:.3f}" for b in self.bare_each)
                + " ms)"
                if self.bare_cpu
                else "  bare signed call CPU (client)   not measured (--bare 0)"
            ),
            "  peak RSS per worker process     "
            + ", ".join(f"{mb:.0f} MiB" for mb in self.worker_rss_mb),
            "  other CPU per image (ms)        "
            + ", ".join(f"{k} {1000 * v / self.n:.2f}" for k, v in self.other_cpu.items()),
            *(
                [f"  calls leaving after their slot  {lateness.describe(self.lateness)}"]
                if self.lateness
                else []
            ),
            *([self._by_thread()] if self.by_thread else []),
            f"  Redis commands per image        {sum(self.commands.values()) / self.n:9.2f}   "
            "(those run by scripts included; "
            + ", ".join(
                f"{name} {calls / self.n:.2f}"
                for name, calls in sorted(self.commands.items(), key=lambda kv: -kv[1])[:8]
            )
            + ")",
            f"  final states                    {self.states}",
        ]
        return "\n".join(rows)

    def _by_thread(self) -> str:
        """The worker's CPU per image by thread kind, largest first; the call threads (client,
        permit, park) beside the bare call."""
        ranked = sorted(self.by_thread.items(), key=lambda kv: -kv[1])
        shown = [(k, v) for k, v in ranked if 1000 * v / self.n >= 0.005]
        text = ", ".join(f"{name} {1000 * cpu / self.n:.2f}" for name, cpu in shown)
        calls = self.by_thread.get("imgmod-call", 0.0) / self.n
        versus = f"; call threads / bare = {calls / self.bare_cpu:.2f}x" if self.bare_cpu else ""
        return f"  worker CPU per image by thread  {text} ms{versus}"


def _every_second(by_second: dict[str, int]) -> tuple[int, ...]:
    """The emulator's calls per second, a second without a call as 0."""
    counts = {int(k): int(v) for k, v in by_second.items()}
    if not counts:
        return ()
    return tuple(counts.get(s, 0) for s in range(min(counts), max(counts) + 1))


def _spread(counts: tuple[int, ...], qps: float) -> str:
    """min / median / max of the seconds between the first and the last (both partial), and
    how many fell under 95 % of the cap: an even shortfall is the pacing's, a few deep
    seconds a stall's."""
    inner = sorted(counts[1:-1])
    if not inner:
        return "      n/a"
    median = inner[len(inner) // 2]
    low = [f"{c} in second {i + 1}" for i, c in enumerate(counts[1:-1]) if c < 0.95 * qps]
    where = f" ({', '.join(low[:6])}{', ...' if len(low) > 6 else ''})" if low else ""
    return (
        f"min {inner[0]}, median {median}, max {inner[-1]} over {len(inner)} s; "
        f"{len(low)} s under 95 %{where}"
    )


def write_input(path: Path, images: ImageServerHandle, n: int) -> None:
    with path.open("w") as fh:
        for i in range(n):
            fh.write(images.image_url(i, EXTENSIONS[i % len(EXTENSIONS)]) + "\n")


def system_seconds(pids: list[int]) -> float:
    """stime of ``pids`` and their descendants (the kernel's share: syscalls, futex waits and
    context switches of many threads)."""
    total = 0
    for pid in pids:
        for p in descendants(pid):
            try:
                total += int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[12])
            except OSError:
                continue
    return total / os.sysconf("SC_CLK_TCK")


def bare_threads(qps: float, latency_ms: float, jitter_ms: float) -> int:
    """Threads enough to hold 0.9 of the cap at the emulator's slowest answer, with a third to
    spare (at least 48). With a fixed 48, a 1 s latency held only ~40 calls/s: fewer calls on
    the wire at once than the worker has, so a cheaper call to compare the worker with."""
    return max(48, math.ceil(0.9 * qps * (latency_ms + jitter_ms) / 1000 * 4 / 3))


def bare_call_cpu(
    emulator: EmulatorHandle, images: ImageServerHandle, n: int, qps: float, threads: int
) -> float:
    """CPU seconds per call of imgmod's client alone (sign, send, parse): ``n`` calls from a
    thread pool in this process, paced at 0.9 of the cap (``threads`` must hold that pace:
    :func:`bare_threads`); no queue, no database, no limiter."""
    client = ModerationClient(
        emulator.url,
        Credentials(TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET),
        pool_size=threads,
        allow_http=True,
    )
    interval = 1 / (0.9 * qps)
    started = time.monotonic() + 0.2
    failures: list[str] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        delay = started + i * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        ref = ImageRef(image_url=images.image_url(1_000_000 + i, EXTENSIONS[i % 5]))
        try:
            client.moderate("baselineCheck_global", ref)
        except Exception as exc:  # noqa: BLE001 - counted, and said below
            with lock:
                failures.append(type(exc).__name__)

    cpu0 = time.process_time()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(n)))
    cpu = time.process_time() - cpu0
    client.close()
    if failures:
        print(f"  (bare calls: {len(failures)} of {n} failed: {set(failures)})", flush=True)
    return cpu / n


def start_group(env: dict[str, str], log_path: Path, args: argparse.Namespace) -> WorkerProcess:
    """One ``imgmod worker`` as a user starts it (a simulated host); waits until every one of
    its processes is ready."""
    processes = processes_for(args.processes, usable_cores())
    # Celery's own log level stays INFO: readiness is read from its " ready." lines.
    argv = [sys.executable, "-m", "worker.cli", "worker", "--processes", str(processes)]
    argv += ["-l", "INFO"]
    argv += ["--hostname", f"bench-{uuid.uuid4().hex[:6]}@%h"]
    if args.concurrency:
        argv += ["-c", str(args.concurrency)]
    with log_path.open("wb") as handle:
        process = subprocess.Popen(
            argv, env={**os.environ, **env}, stdout=handle, stderr=subprocess.STDOUT
        )
    group = WorkerProcess(process=process, log_path=log_path)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"imgmod worker exited with {process.returncode}:\n{group.log()}")
        return group.log().count(" ready.") >= processes

    wait_until(ready, 120, "every worker process to be ready")
    return group


def run_one(
    db: str,
    args: argparse.Namespace,
    emulator: EmulatorHandle,
    images: ImageServerHandle,
    broker_url: str,
    redis_pid: int,
    tmp: Path,
) -> Figures:
    # Each run starts as a user's job does: no limiter schedule and no learned margin in
    # Redis (a run right after another inherited both, and skipped the warm start).
    with redis.Redis.from_url(broker_url) as admin, fresh_database(db) as url:
        admin.flushall()
        env = pipeline_env(url, broker_url, emulator.url, args.qps * args.margin)
        env.update(IMGMOD_LOG_LEVEL=args.loglevel)
        if args.ids_per_message:
            env.update(IMGMOD_IDS_PER_MESSAGE=str(args.ids_per_message))
        if args.profile:
            env.update(
                PYTHONPATH=str(Path(__file__).resolve().parent / "profiling"),
                IMGMOD_BENCH_PROFILE=f"{args.profile}.{db}",
            )
        elif args.by_thread:
            env.update(
                PYTHONPATH=str(Path(__file__).resolve().parent / "profiling"),
                IMGMOD_BENCH_THREAD_NAMES="1",
            )
        metrics_bases: list[tuple[int, int]] = []  # (first port, processes) per group
        if args.celery:
            workers = [
                start_worker(
                    {**env, "IMGMOD_WORKER_CONCURRENCY": str(args.concurrency or 128)},
                    tmp / f"{db}-worker{i}.log",
                    concurrency=args.concurrency or 128,
                    hostname=f"bench{i}-{uuid.uuid4().hex[:6]}@%h",
                )
                for i in range(args.workers)
            ]
        else:
            workers = []
            for i in range(args.workers):
                group_env = dict(env)
                if args.lateness:
                    count = processes_for(args.processes, usable_cores())
                    metrics_bases.append((lateness.free_ports(count), count))
                    group_env.update(IMGMOD_METRICS_PORT=str(metrics_bases[-1][0]))
                workers.append(start_group(group_env, tmp / f"{db}-worker{i}.log", args))
        bare_pool = bare_threads(args.qps, args.latency_ms, args.jitter_ms)
        bare = bare_call_cpu(emulator, images, args.bare, args.qps, bare_pool) if args.bare else 0.0
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
        threads0 = thread_cpu(w.process.pid for w in workers) if args.by_thread else Counter()
        worker_sys0 = system_seconds([w.process.pid for w in workers])
        children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        admin.config_resetstat()  # the job's own commands only (broker, limiter, answers)
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
        by_thread = (
            thread_cpu(w.process.pid for w in workers) - threads0 if args.by_thread else Counter()
        )
        worker_sys = system_seconds([w.process.pid for w in workers]) - worker_sys0
        other = {name: cpu_seconds(pid) - cpu0[name] for name, pid in watched.items()}
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        other["enqueue"] = (children.ru_utime + children.ru_stime) - (
            children0.ru_utime + children0.ru_stime
        )
        commands = {
            name.removeprefix("cmdstat_"): int(v["calls"])
            for name, v in admin.info("commandstats").items()
        }
        logs = "".join(w.log() for w in workers)
        limiter_events = (logs.count(": forgiven"), logs.count("margin on"), logs.count("cut to"))
        rss = [
            peak_rss_mb(p)
            for w in workers
            for p in (descendants(w.process.pid)[1:] or [w.process.pid])
        ]
        stats = emulator.stats()
        first, last, _results, states = job_span(engine)
        with engine.connect() as conn:
            first_result = conn.execute(
                sa.select(sa.func.min(store.results.c.moderated_at))
            ).scalar()
            first_queued = conn.execute(sa.select(sa.func.min(store.items.c.queued_at))).scalar()
        engine.dispose()
        late = lateness.scrape(base + i for base, count in metrics_bases for i in range(count))
        # The workers idle now; the emulator's figures were read above.
        bare_after = (
            bare_call_cpu(emulator, images, args.bare, args.qps, bare_pool) if args.bare else 0.0
        )
        for w in workers:
            w.terminate(timeout=60)
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
            for w in workers:
                shutil.copy(w.log_path, args.logs / w.log_path.name)
            # The emulator's calls and 403s per second, to lay beside the workers' logs.
            (args.logs / f"{db}-emulator-seconds.json").write_text(
                json.dumps({k: stats.get(k) for k in ("calls_by_second", "by_code")}, indent=1)
            )
    billed_by_image: dict[str, int] = stats["billed_by_image"]
    by_code: dict[str, int] = stats["by_code"]
    return Figures(
        db=db,
        n=args.n,
        qps=args.qps,
        wall=last - first,
        first_result=(first_result.timestamp() - first) if first_result else 0.0,
        first_call=float(stats["first_call_at"] or first) - first,
        calls_span=float(stats["last_call_at"] or 0) - float(stats["first_call_at"] or 0),
        tail=last - float(stats["last_call_at"] or last),
        first_queued=(first_queued.timestamp() - first) if first_queued else 0.0,
        per_second=_every_second(stats.get("calls_by_second", {})),  # older emulators: none
        throttled=int(by_code.get("403", 0)),
        calls=sum(by_code.values()),
        billed=int(stats["billed"]),
        distinct_billed=len(billed_by_image),
        max_billed_per_image=max(billed_by_image.values(), default=0),
        worker_cpu=worker_cpu,
        worker_sys=worker_sys,
        limiter_events=limiter_events,
        bare_each=(bare, bare_after) if args.bare else (),
        worker_rss_mb=rss,
        other_cpu=other,
        states=states,
        commands=commands,
        lateness=late,
        by_thread=dict(by_thread),
    )


def arguments() -> argparse.ArgumentParser:
    """The command line; ``bench/baselines.py --imgmod`` takes its defaults from here, so a new
    option cannot leave that run without it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--qps", type=float, default=100.0)
    parser.add_argument("--latency-ms", type=float, default=300.0)
    parser.add_argument("--jitter-ms", type=float, default=100.0)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--workers", type=int, default=1, help="worker groups (hosts)")
    parser.add_argument(
        "--processes", type=int, default=0, help="processes per group (0: one per core)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=None, help="threads per group (default: the setting)"
    )
    parser.add_argument(
        "--celery", action="store_true", help="plain `celery -A worker worker` processes"
    )
    parser.add_argument("--bare", type=int, default=400, help="bare client calls (0: skip)")
    parser.add_argument("--margin", type=float, default=1.0, help="IMGMOD_QPS = qps x this")
    parser.add_argument(
        "--loglevel", default="INFO", help="IMGMOD_LOG_LEVEL (Celery's own stays INFO)"
    )
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--logs", type=Path, help="copy the workers' logs into this folder")
    parser.add_argument(
        "--ids-per-message", type=int, default=0, help="IMGMOD_IDS_PER_MESSAGE (0: the setting)"
    )
    parser.add_argument(
        "--lateness",
        action="store_true",
        help="turn on the workers' metrics and print how late calls left after their slots",
    )
    parser.add_argument(
        "--by-thread",
        action="store_true",
        help="name the workers' threads for the kernel and print their CPU per image by kind "
        "(imgmod-call: client, permit, park; executor-0: Celery's pool, a message's claim and "
        "store; main: the consumer); costs nothing measurable",
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="cProfile every worker process (all threads) into FILE.<db>.<pid>; CPU figures "
        "are then inflated",
    )
    return parser


def main() -> None:
    parser = arguments()
    args = parser.parse_args()
    if args.by_thread and args.profile:
        parser.error("--by-thread and --profile: one at a time (the profiler's CPU would count)")
    dbs = ("sqlite", "postgresql") if args.db == "both" else (args.db,)
    print(
        f"throughput: n={args.n} qps={args.qps:g} latency={args.latency_ms:g}+0..{args.jitter_ms:g}"
        f" ms, {args.workers} {'celery worker' if args.celery else 'imgmod worker group'}(s) x "
        f"{args.processes or 'auto'} process(es) x {args.concurrency or 'default'} threads, "
        f"IMGMOD_QPS {args.margin:g} x cap, log level {args.loglevel}, ids per message "
        f"{args.ids_per_message or 'default'}; load average {loadavg()}; "
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
