"""What a user gets without imgmod: the official SDK in a loop, and in a 64-thread pool.

    .venv/bin/python bench/baselines.py [--qps 100] [--latency-ms 300] [--jitter-ms 100]
        [--n-sequential 100] [--n-pool 2000] [--threads 64]

Against the same emulator as ``bench/throughput.py`` (cap 100/s, 300 ms + jitter): the SDK's
``Client(Config(..., protocol='HTTP'))`` and ``image_moderation_with_options``, once per image,
no limiter and no retry, as the vendor's sample code does. Prints images/s, the share of calls
answered 403 (throttled; for them a failed image), and how much of the job got done.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from alibabacloud_green20220302 import models
from alibabacloud_green20220302.client import Client
from alibabacloud_tea_openapi.utils_models import Config
from darabonba.runtime import RuntimeOptions
from stack import loadavg

from worker.emulator import TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET
from worker.processes import EmulatorHandle, running_emulator, running_image_server

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qps", type=float, default=100.0)
    parser.add_argument("--latency-ms", type=float, default=300.0)
    parser.add_argument("--jitter-ms", type=float, default=100.0)
    parser.add_argument("--n-sequential", type=int, default=100)
    parser.add_argument("--n-pool", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=64)
    args = parser.parse_args()
    print(
        f"baselines: official SDK, cap {args.qps:g}/s, latency {args.latency_ms:g}+0.."
        f"{args.jitter_ms:g} ms; load average {loadavg()}",
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


if __name__ == "__main__":
    main()
