"""How close the shared limiter gets to its cap, and what each permit costs.

    .venv/bin/python bench/limiter.py [--url redis://127.0.0.1:6379/14] [--seconds 5]

For qps=100 and qps=2000, 4 processes x 64 threads acquire permits as fast as the limiter lets
them (no API call in between: the worst case for contention). Prints permits/s, the worst
half-open one-second window (by Redis server slot and by the client clock at return), Redis
round trips per permit, and client CPU per permit (user+sys of the worker processes). The Redis
server's CPU is read from INFO and covers every client of that server.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass

import redis

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from worker.limits import RateLimiter  # noqa: E402

SECOND_US = 1_000_000


@dataclass(frozen=True)
class ProcessResult:
    slots_us: list[int]
    returned_us: list[int]
    round_trips: int
    cpu_seconds: float


def worker(url: str, key: str, qps: float, threads: int, control: str) -> ProcessResult:
    client = redis.Redis.from_url(url)
    limiter = RateLimiter(client, key=key, qps=qps)
    client.incr(f"{control}:ready")
    deadline = time.monotonic() + 60
    while not client.exists(f"{control}:stop"):
        if time.monotonic() > deadline:
            raise RuntimeError("no start signal within 60 s")
        time.sleep(0.005)
    stop = float(client.get(f"{control}:stop") or 0)
    slots: list[int] = []
    returned: list[int] = []
    lock = threading.Lock()

    def run() -> None:
        while time.time() < stop:
            grant = limiter.acquire_grant(timeout=30)
            now = int(time.time() * SECOND_US)
            with lock:
                slots.append(grant.slot_us)
                returned.append(now)

    cpu0 = sum(os.times()[:2])
    rt0 = limiter.round_trips
    pool = [threading.Thread(target=run) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    cpu = sum(os.times()[:2]) - cpu0
    client.close()
    return ProcessResult(slots, returned, limiter.round_trips - rt0, cpu)


def max_in_window(stamps_us: list[int], window_us: int = SECOND_US) -> int:
    stamps = sorted(stamps_us)
    best, lo = 0, 0
    for hi, stamp in enumerate(stamps):
        while stamp - stamps[lo] >= window_us:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def run(url: str, qps: float, processes: int, threads: int, seconds: float) -> None:
    client = redis.Redis.from_url(url)
    key = f"bench:limiter:{uuid.uuid4().hex}"
    control = f"{key}:control"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes) as pool:
        pending = [
            pool.apply_async(worker, (url, key, qps, threads, control)) for _ in range(processes)
        ]
        while int(client.get(f"{control}:ready") or 0) < processes:
            time.sleep(0.01)
        server_cpu0 = redis_cpu(client)
        client.set(f"{control}:stop", repr(time.time() + seconds))
        results = [p.get(timeout=seconds + 120) for p in pending]
        server_cpu = redis_cpu(client) - server_cpu0
    client.delete(key, f"{control}:ready", f"{control}:stop")
    client.close()

    slots = sorted(s for r in results for s in r.slots_us)
    returned = [t for r in results for t in r.returned_us]
    permits = len(slots)
    span = (slots[-1] - slots[0]) / SECOND_US
    round_trips = sum(r.round_trips for r in results)
    cpu = sum(r.cpu_seconds for r in results)
    print(f"qps={qps:g}  {processes} processes x {threads} threads, {seconds:g} s")
    print(f"  permits/s achieved        {(permits - 1) / span:10.2f}  ({permits} permits)")
    print(f"  worst 1 s window, slots   {max_in_window(slots):10d}")
    print(f"  worst 1 s window, clients {max_in_window(returned):10d}")
    print(f"  Redis round trips/permit  {round_trips / permits:10.2f}")
    print(f"  client CPU us/permit      {cpu / permits * 1e6:10.1f}")
    print(f"  Redis CPU us/permit       {server_cpu / permits * 1e6:10.1f}  (whole server)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--qps", type=float, nargs="*", default=[100.0, 2000.0])
    args = parser.parse_args()
    for qps in args.qps:
        run(args.url, qps, args.processes, args.threads, args.seconds)


if __name__ == "__main__":
    main()
