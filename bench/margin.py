"""Does the limiter's learned margin find its level? Pacing against a 100/s cap at three amounts
of arrival jitter (the "load" a busy host adds between a permit and the call reaching the
service), the real limiter on a private Redis, no API, no database.

    .venv/bin/python bench/margin.py [--seconds 40] [--jitter-ms 0,10,30] [--qps 100]

Per level: 64 threads take permits from a fresh ``RateLimiter`` (the worker's ``Margin``), wait
a uniform 0..J ms after their slot (the jitter), then ask the emulator's own sliding one-second
window (``worker.emulator.throttle``, cap ``--qps``) to admit the call; a refusal is a 403 and
goes to ``on_throttled`` as in the worker. Prints admitted calls per second over the cap
(the ratio; the first 5 s of learning included), the 403 share, and the margin at the end,
beside the fixed 0.98 margin the limiter used before (same run, same jitter).
"""

from __future__ import annotations

import argparse
import logging
import random
import threading
import time
import uuid

import redis
from broker_memory import cpu_probe
from stack import loadavg

from worker.emulator.throttle import SlidingWindow
from worker.limits import Margin, RateLimiter
from worker.processes import private_redis

logging.getLogger("worker.limits").setLevel(logging.ERROR)  # its cut lines would flood the output


def run_level(url: str, qps: float, jitter_ms: float, seconds: float, margin: Margin) -> str:
    client = redis.Redis.from_url(url)
    limiter = RateLimiter(client, key=f"bench:margin:{uuid.uuid4().hex}", qps=qps, margin=margin)
    window = SlidingWindow(qps)
    lock = threading.Lock()
    counts = {"admitted": 0, "throttled": 0}
    stop = time.monotonic() + seconds
    rng = random.Random(7)

    def thread() -> None:
        while time.monotonic() < stop:
            limiter.acquire()
            time.sleep(rng.uniform(0, jitter_ms) / 1000)
            with lock:
                moment = time.monotonic()
                ok = window.admit("k", moment)
                if moment < stop:  # calls after the end would inflate the ratio
                    counts["admitted" if ok else "throttled"] += 1
            if not ok:
                limiter.on_throttled()

    threads = [threading.Thread(target=thread, daemon=True) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rate, learned = limiter.current()
    client.close()
    calls = counts["admitted"] + counts["throttled"]
    return (
        f"ratio {counts['admitted'] / seconds / qps:6.3f}   403s {counts['throttled']:4d} "
        f"({100 * counts['throttled'] / max(1, calls):.2f} %)   margin at the end {learned:.4f}, "
        f"rate {rate:.1f}/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--jitter-ms", default="0,10,30")
    parser.add_argument("--qps", type=float, default=100.0)
    args = parser.parse_args()
    print(
        f"margin: cap {args.qps:g}/s, {args.seconds:g} s per level; load average {loadavg()}; "
        f"CPU probe {cpu_probe():.0f} ms",
        flush=True,
    )
    with private_redis() as server:
        for jitter in (float(j) for j in args.jitter_ms.split(",")):
            for name, margin in (("learned", Margin()), ("fixed 0.98", Margin.fixed(0.98))):
                line = run_level(server.url, args.qps, jitter, args.seconds, margin)
                print(f"  jitter 0..{jitter:g} ms, {name:10s}  {line}", flush=True)
    print(f"load average after {loadavg()}")


if __name__ == "__main__":
    main()
