"""Throughput of the producer path without a broker: read a file, insert items, mark queued.

    .venv/bin/python bench/enqueue_store.py --lines 200000 --db sqlite:////tmp/bench.db
    .venv/bin/python bench/enqueue_store.py --lines 200000 --db postgresql://root@127.0.0.1/bench

Prints lines/s for reading+validating alone, and for the whole read -> insert -> mark_queued
path, plus claim+record rates for a sample with N threads. The database must be empty or new.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from itertools import islice
from pathlib import Path

from worker import store
from worker.producer import to_new_item
from worker.results import parse_response
from worker.sources import Accepted, read_inputs

BODY = (
    '{"Code":200,"Msg":"OK","RequestId":"R","Data":{"RiskLevel":"none",'
    '"Result":[{"Label":"nonLabel","Description":"No risk detected"}]}}'
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--db", default="sqlite:////tmp/imgmod-bench.db")
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--claims", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.txt"
        with path.open("w") as fh:
            for i in range(args.lines):
                fh.write(f"https://images.example.com/archive/{i:09d}.jpg\n")

        t0 = time.perf_counter()
        n = sum(1 for _ in read_inputs([str(path)]))
        read_s = time.perf_counter() - t0
        print(f"read+validate: {n / read_s:,.0f} lines/s ({n} lines, {read_s:.1f} s)")

        store.upgrade(args.db)
        engine = store.make_engine(args.db)
        job = store.get_or_create_job(
            engine, f"bench-{uuid.uuid4().hex[:8]}", "baselineCheck_global", ""
        )
        records = read_inputs([str(path)])
        t0 = time.perf_counter()
        inserted: list[int] = []
        while chunk := list(islice(records, args.batch)):
            ids = store.insert_items(
                engine, job.id, [to_new_item(r) for r in chunk if isinstance(r, Accepted)]
            )
            store.mark_queued(engine, ids)
            inserted.extend(ids)
        enqueue_s = time.perf_counter() - t0
        print(
            f"read+insert+mark_queued: {len(inserted) / enqueue_s:,.0f} lines/s ({enqueue_s:.1f} s)"
        )

    sample = inserted[: args.claims]
    response = parse_response(BODY)
    per_thread = [sample[i :: args.threads] for i in range(args.threads)]

    def work(ids: list[int]) -> None:
        for item_id in ids:
            if store.claim_item(engine, item_id, "bench", 60) is not None:
                store.record_result(engine, item_id, "bench", job.service, response)

    threads = [threading.Thread(target=work, args=(ids,)) for ids in per_thread]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    work_s = time.perf_counter() - t0
    print(
        f"claim+record_result, {args.threads} threads: {len(sample) / work_s:,.0f} items/s "
        f"({len(sample)} items, {work_s:.1f} s)"
    )
    engine.dispose()


if __name__ == "__main__":
    main()
