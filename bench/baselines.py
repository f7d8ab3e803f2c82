"""What a user gets without imgmod: the official SDK in a loop, in a 64-thread pool, and the
script a user would write to do it properly, side by side with imgmod on the same emulator.

    .venv/bin/python bench/baselines.py [--qps 100] [--latency-ms 300] [--jitter-ms 100]
        [--n-sequential 100] [--n-pool 2000] [--threads 64] [--n-script 3000] [--imgmod]
        [--db sqlite]

Against the same emulator as ``bench/throughput.py`` (cap 100/s, 300 ms + jitter):

* the SDK's ``Client(Config(..., protocol='HTTP'))`` and ``image_moderation_with_options``,
  once per image, no limiter and no retry, as the vendor's sample code does (sequential, then
  ``--threads`` threads): images/s, the share answered 403, how much of the job got done;
* **the user's script** (issue 12): the same SDK, a 64-thread pool, a pacing limiter at 0.98 of
  the cap, retries on 403 and 405, every answer into SQLite: ratio to the cap, throttled
  calls, billed per image, CPU per image, and the SDK's bare signed call CPU measured in the
  same run;
* with ``--imgmod``: one default ``imgmod worker`` on the same number of images (the
  ``bench/throughput.py`` run), printed after it.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from alibabacloud_green20220302 import models
from alibabacloud_green20220302.client import Client
from alibabacloud_tea_openapi.utils_models import Config
from broker_memory import cpu_probe
from darabonba.runtime import RuntimeOptions
from stack import loadavg

from worker.emulator import TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET
from worker.processes import EmulatorHandle, private_redis, running_emulator, running_image_server

EXTENSIONS = ("png", "jpg", "gif", "bmp", "webp")


def sdk_client(emulator: EmulatorHandle) -> Client:
    return Client(
        Config(
            access_key_id=TEST_ACCESS_KEY_ID,
            access_key_secret=TEST_ACCESS_KEY_SECRET,
            endpoint=emulator.endpoint,
            protocol="HTTP",
        )
    )


def moderate_all(
    emulator: EmulatorHandle, urls: list[str], threads: int
) -> tuple[float, Counter[str]]:
    """Moderate every URL once with ``threads`` SDK clients; (seconds, answers by code)."""
    codes: Counter[str] = Counter()
    lock = threading.Lock()
    local = threading.local()

    def one(url: str) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = sdk_client(emulator)
        request = models.ImageModerationRequest(
            service="baselineCheck_global",
            service_parameters=json.dumps({"imageUrl": url}),
        )
        try:
            code = str(client.image_moderation_with_options(request, RuntimeOptions()).body.code)
        except Exception as exc:  # noqa: BLE001 - the SDK raises for transport faults
            code = type(exc).__name__
        with lock:
            codes[code] += 1

    started = time.perf_counter()
    if threads == 1:
        for url in urls:
            one(url)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, urls))
    return time.perf_counter() - started, codes


def report(label: str, n: int, seconds: float, codes: Counter[str], qps: float) -> None:
    done = codes.get("200", 0)
    print(f"[{label}] {n} images")
    print(f"  wall                  {seconds:9.2f} s   (at the cap: {n / qps:.2f} s)")
    print(f"  calls/s               {n / seconds:9.2f}")
    print(f"  images done/s         {done / seconds:9.2f}")
    print(f"  throttled (403)       {100 * codes.get('403', 0) / n:8.1f} %")
    print(f"  job finished          {done} of {n} images ({100 * done / n:.1f} %)  {dict(codes)}")


class Pacer:
    """What a careful user writes: one call every 1/(share x cap) seconds, shared by threads."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self._interval
        if slot > now:
            time.sleep(slot - now)


def user_script(
    emulator: EmulatorHandle, urls: list[str], threads: int, qps: float, db: Path
) -> tuple[float, float, Counter[str]]:
    """The ~60-line script: SDK, thread pool, pacing at 0.98 of the cap, retries on 403/405
    (and transport errors), each answer into SQLite. (wall s, CPU s, answers by code)."""
    pacer = Pacer(0.98 * qps)
    codes: Counter[str] = Counter()
    lock = threading.Lock()
    local = threading.local()
    conn = sqlite3.connect(db, check_same_thread=False)
    conn.execute("CREATE TABLE answers (url TEXT PRIMARY KEY, request_id TEXT, body TEXT)")

    def one(url: str) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = sdk_client(emulator)
        request = models.ImageModerationRequest(
            service="baselineCheck_global",
            service_parameters=json.dumps({"imageUrl": url}),
        )
        for attempt in range(20):
            pacer.wait()
            try:
                body = client.image_moderation_with_options(request, RuntimeOptions()).body
                code = str(body.code)
            except Exception as exc:  # noqa: BLE001 - the SDK raises for transport faults
                body, code = None, type(exc).__name__
            with lock:
                codes[code] += 1
            if code == "200" and body is not None:
                with lock, conn:
                    conn.execute(
                        "INSERT INTO answers VALUES (?, ?, ?)",
                        (url, body.request_id, json.dumps(body.to_map())),
                    )
                return
            time.sleep(min(2.0, 0.2 * 2**attempt))  # 403, 405, 5xx, transport: back off

    started, cpu0 = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, urls))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu0
    conn.close()
    return wall, cpu, codes


def sdk_bare_call_cpu(emulator: EmulatorHandle, urls: list[str], qps: float) -> float:
    """CPU seconds of one signed SDK call alone (16 threads, paced at 0.9 of the cap)."""
    pacer = Pacer(0.9 * qps)
    local = threading.local()

    def one(url: str) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = sdk_client(emulator)
        pacer.wait()
        request = models.ImageModerationRequest(
            service="baselineCheck_global", service_parameters=json.dumps({"imageUrl": url})
        )
        client.image_moderation_with_options(request, RuntimeOptions())

    for url in urls[:16]:  # clients built and connections opened outside the measurement
        one(url)
    cpu0 = time.process_time()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, urls[16:]))
    return (time.process_time() - cpu0) / max(1, len(urls) - 16)


def report_script(
    n: int, qps: float, wall: float, cpu: float, codes: Counter[str], stats: dict, bare: float
) -> None:
    calls = sum(codes.values())
    billed = int(stats.get("billed", 0))
    print(f"[user script: SDK, 64 threads, pacing at 0.98 x cap, retries, SQLite] {n} images")
    print(f"  wall                  {wall:9.2f} s   (ideal {n / qps:.2f} s)")
    print(f"  ratio to the cap      {n / qps / wall:9.3f}")
    throttled = codes.get("403", 0)
    share = 100 * throttled / max(1, calls)
    print(f"  throttled (403)       {throttled:9d}   ({share:.2f}% of {calls} calls)")
    print(f"  billed per image      {billed / max(1, n):9.3f}   {dict(codes)}")
    print(f"  CPU per image         {1000 * cpu / n:9.3f} ms")
    times = cpu / n / max(bare, 1e-9)
    print(f"  SDK bare call CPU     {1000 * bare:9.3f} ms   (script / bare = {times:.2f}x)")
    print(f"  load average after    {loadavg()}", flush=True)


def arguments() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qps", type=float, default=100.0)
    parser.add_argument("--latency-ms", type=float, default=300.0)
    parser.add_argument("--jitter-ms", type=float, default=100.0)
    parser.add_argument("--n-sequential", type=int, default=100)
    parser.add_argument("--n-pool", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--n-script", type=int, default=3000, help="user script images (0: skip)")
    parser.add_argument("--imgmod", action="store_true", help="then one default imgmod worker")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    return parser


def main() -> None:
    args = arguments().parse_args()
    print(
        f"baselines: official SDK, cap {args.qps:g}/s, latency {args.latency_ms:g}+0.."
        f"{args.jitter_ms:g} ms; load average {loadavg()}; CPU probe {cpu_probe():.0f} ms",
        flush=True,
    )
    with (
        running_image_server() as images,
        running_emulator(
            qps=args.qps, latency_ms=args.latency_ms, jitter_ms=args.jitter_ms
        ) as emulator,
    ):
        urls = [images.image_url(i, EXTENSIONS[i % 5]) for i in range(args.n_pool)]
        seconds, codes = moderate_all(emulator, urls[: args.n_sequential], 1)
        report("SDK, sequential loop", args.n_sequential, seconds, codes, args.qps)
        time.sleep(1.1)  # let the emulator's one-second window empty between the two runs
        seconds, codes = moderate_all(emulator, urls, args.threads)
        report(f"SDK, {args.threads} threads, no limiter", args.n_pool, seconds, codes, args.qps)
        if args.n_script:
            n = args.n_script
            script_urls = [images.image_url(i, EXTENSIONS[i % 5]) for i in range(10**6, 10**6 + n)]
            time.sleep(1.1)
            bare = sdk_bare_call_cpu(emulator, urls[:316], args.qps)
            time.sleep(1.1)
            emulator.reset()
            with tempfile.TemporaryDirectory(prefix="imgmod-baseline-") as tmp:
                wall, cpu, codes = user_script(
                    emulator, script_urls, 64, args.qps, Path(tmp) / "answers.db"
                )
            report_script(n, args.qps, wall, cpu, codes, emulator.stats(), bare)
        if args.imgmod:
            imgmod_side(args, emulator, images)


def imgmod_options(args: argparse.Namespace) -> argparse.Namespace:
    """bench/throughput.py's options for the imgmod side: its own defaults (a hand-built list
    once missed an option it had gained, and the run died after the script's), this run's job."""
    import throughput

    return throughput.arguments().parse_args(
        [
            *("--n", str(args.n_script or 3000), "--qps", str(args.qps), "--db", args.db),
            *("--latency-ms", str(args.latency_ms), "--jitter-ms", str(args.jitter_ms)),
        ]
    )


def imgmod_side(args: argparse.Namespace, emulator: EmulatorHandle, images: object) -> None:
    """The same job through one default ``imgmod worker`` (bench/throughput.py's run)."""
    import throughput

    options = imgmod_options(args)
    time.sleep(1.1)
    with private_redis() as redis_server, tempfile.TemporaryDirectory() as tmp:
        assert redis_server.process is not None
        figures = throughput.run_one(
            args.db,
            options,
            emulator,
            images,  # type: ignore[arg-type]
            redis_server.url,
            redis_server.process.pid,
            Path(tmp),
        )
    print("[imgmod: one default `imgmod worker`]")
    print(figures.report(), flush=True)
    print(f"  load average after              {loadavg()}", flush=True)


if __name__ == "__main__":
    main()
