"""Throughput of the emulator: signed ImageModeration calls, each with a real image download.

Starts the sample image server and the emulator as subprocesses (QPS cap lifted), then drives
the emulator with a concurrent aiohttp client (keep-alive) for a bounded number of calls and
prints requests/s. Everything stays on 127.0.0.1.

    .venv/bin/python bench/emulator.py [--requests 6000] [--concurrency 64] [--images 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter

import aiohttp

from worker.emulator import TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET
from worker.processes import running_emulator, running_image_server
from worker.signing import sign_moderation_request


async def drive(endpoint: str, image_urls: list[str], total: int, concurrency: int) -> Counter[str]:
    host = endpoint.split("://", 1)[1]
    codes: Counter[str] = Counter()
    counter = iter(range(total))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one_worker() -> None:
            for index in counter:
                fields = {
                    "Service": "baselineCheck_global",
                    "ServiceParameters": json.dumps(
                        {"imageUrl": image_urls[index % len(image_urls)], "dataId": f"b{index}"}
                    ),
                }
                signed = sign_moderation_request(
                    host=host,
                    key_id=TEST_ACCESS_KEY_ID,
                    secret=TEST_ACCESS_KEY_SECRET,
                    fields=fields,
                )
                async with session.post(
                    endpoint + "/", data=signed.body, headers=signed.headers
                ) as response:
                    body = await response.json(content_type=None)
                    codes[str(body.get("Code"))] += 1

        await asyncio.gather(*(one_worker() for _ in range(concurrency)))
    return codes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--images", type=int, default=500)
    args = parser.parse_args()
    with running_image_server() as images, running_emulator(qps=1_000_000) as emulator:
        urls = [
            images.image_url(n, ("png", "jpg", "gif", "bmp", "webp")[n % 5])
            for n in range(args.images)
        ]
        asyncio.run(drive(emulator.url, urls, min(500, args.requests), args.concurrency))  # warm-up
        emulator.reset()
        started = time.perf_counter()
        codes = asyncio.run(drive(emulator.url, urls, args.requests, args.concurrency))
        elapsed = time.perf_counter() - started
        stats = emulator.stats()
    rate = args.requests / elapsed
    print(
        f"emulator: {args.requests} signed calls with image download in {elapsed:.2f} s "
        f"= {rate:.0f} requests/s (concurrency {args.concurrency}, codes {dict(codes)}, "
        f"billed {stats['billed']}, max concurrency seen {stats['max_concurrency']})"
    )


if __name__ == "__main__":
    main()
