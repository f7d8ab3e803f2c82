"""CPU of each step of the worker's hot path, alone, one thread, no GIL contention.

    .venv/bin/python bench/profiling/parts.py [--n 2000] [--db sqlite|postgresql] [--ids 8]
        [--sql-only]

A fresh database, a private redis-server and the emulator (0 ms latency, cap lifted): claim a
row (``store.claim_item``), store its answer (``store.record_result``, the vendor's sample
answer with labels), the same a message of ``--ids`` rows at a time as the task does
(``store.claim_items``, ``store.record_results``; printed per image), park and clear it in
Redis, record the message in hand and let it go, one limiter permit, and one signed API call
(imgmod's client). Prints CPU microseconds per operation (this process's ``process_time``:
the client's side only), so a change to one step is measured without a whole job's noise.
The machine's CPU probe and load average come first.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent.parent))

import redis  # noqa: E402
from broker_memory import cpu_probe  # noqa: E402
from stack import fresh_database, loadavg  # noqa: E402

from worker import store  # noqa: E402
from worker.client import ModerationClient  # noqa: E402
from worker.durable import slot_of  # noqa: E402
from worker.emulator import TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET  # noqa: E402
from worker.heartbeat import MessagesInHand  # noqa: E402
from worker.limits import Margin, RateLimiter  # noqa: E402
from worker.params import ImageRef  # noqa: E402
from worker.processes import private_redis, running_emulator, running_image_server  # noqa: E402
from worker.results import parse_response  # noqa: E402
from worker.settings import Credentials  # noqa: E402
from worker.store.answers import ParkedAnswers  # noqa: E402
from worker.store.items import NewItem  # noqa: E402

SERVICE = "baselineCheck_global"
ANSWER = HERE.parent.parent / "tests" / "data" / "vendor" / "response_risk_detected.json"


def per_op(label: str, n: int, step: Callable[[int], object], per: int = 1) -> None:
    """CPU and wall per operation (per ``per`` images of one operation: a message's)."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(n):
        step(i)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    n *= per
    print(f"  {label:34s} {1e6 * cpu / n:8.0f} µs CPU   {1e6 * wall / n:8.0f} µs wall", flush=True)


def rows2(image_url: Callable[[int], str], n: int) -> list[NewItem]:
    """A second set of ``n`` rows, claimed and stored a message at a time."""
    return [
        NewItem("url", f"m{i}", image_url(i), None, None, None, None, None, "x", i, "pending")
        for i in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--ids",
        type=int,
        default=8,
        help="ids per message for the message-level lines (claim_items, record_results)",
    )
    parser.add_argument("--sql-only", action="store_true", help="the SQL steps only")
    args = parser.parse_args()
    n, k = args.n, args.ids
    print(f"parts: n={n}, {args.db}; load average {loadavg()}; CPU probe {cpu_probe():.0f} ms")
    response = parse_response(ANSWER.read_text(encoding="utf-8"), http_status=200)
    with (
        fresh_database(args.db) as url,
        private_redis() as server,
        running_image_server() as images,
        running_emulator(qps=100_000, latency_ms=0, jitter_ms=0) as emulator,
    ):
        engine = store.make_engine(url)
        job = store.get_or_create_job(engine, "parts", "baselineCheck_global", "")
        rows = [
            NewItem(
                "url", f"u{i}", images.image_url(i), None, None, None, None, None, "x", i, "pending"
            )
            for i in range(n)
        ]
        ids = sorted(store.insert_items(engine, job.id, rows + rows2(images.image_url, n)))
        ids, batch_ids = ids[:n], ids[n:]
        claimed: dict[int, store.ClaimedItem] = {}

        def claim(i: int) -> None:
            item = store.claim_item(engine, ids[i], f"parts/{i}", 30.0)
            assert item is not None
            claimed[i] = item

        def record(i: int) -> None:
            item = claimed[i]
            store.record_result(engine, item.id, "o", item.service, response, job_id=item.job_id)

        per_op("claim_item", n, claim)
        per_op("record_result (4 labels)", n, record)
        messages = [batch_ids[j : j + k] for j in range(0, n, k)]
        held: dict[int, list[store.ClaimedItem]] = {}

        def claim_message(j: int) -> None:
            held[j] = store.claim_items(engine, messages[j], f"parts/m{j}", 30.0)
            assert len(held[j]) == len(messages[j])

        def record_message(j: int) -> None:
            answers = [store.BilledAnswer(i.id, i.job_id, i.service, response) for i in held[j]]
            assert all(store.record_results(engine, answers))

        per_op(f"claim_items ({k} ids), per image", len(messages), claim_message, k)
        per_op(f"record_results ({k}), per image", len(messages), record_message, k)
        if args.sql_only:
            engine.dispose()
            return
        r = redis.Redis.from_url(server.url)
        answers = ParkedAnswers(r)
        per_op(
            "park + clear the answer",
            n,
            lambda i: (
                answers.park(slot_of(claimed[i]), response.raw),
                answers.clear(slot_of(claimed[i])),
            ),
        )
        hands = MessagesInHand(r, "parts", "me", 30)
        per_op("message in hand: took + done", n, lambda i: (hands.took(i), hands.done(i)))
        limiter = RateLimiter(r, key="parts", qps=1e6, margin=Margin())
        per_op("limiter permit", n, lambda i: limiter.acquire())
        client = ModerationClient(
            emulator.url, Credentials(TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET), allow_http=True
        )
        ref = ImageRef(image_url=images.image_url(1))
        per_op("signed API call (client)", n, lambda _: client.moderate(SERVICE, ref))
        engine.dispose()


if __name__ == "__main__":
    main()
