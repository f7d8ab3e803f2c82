"""A policy change over a job of stored answers: decisions per second, and 0 API calls.

    .venv/bin/python bench/decide.py [--refs 100000] [--db sqlite:////tmp/decide.db | postgresql://...]

Builds a job of ``--refs`` rows through the store (the producer's ``insert_items``), then stores
answers in bulk SQL as the workers would have (a mix: a fifth high risk, a fifth medium, the
rest none, one label each and an Ext custom-image hit on every tenth; 1% of the rows failed
405 instead), then times ``worker.decide.decide_job`` three times: the shipped default policy
(every row decided for the first time), the same policy again (nothing to write), and a second
version that reads labels, confidences and Ext (every row gets a new decision row and event).
Target (issue #15): 100,000 stored answers decided in under 10 s on SQLite. On PostgreSQL the
tables are ANALYZEd after the bulk load, as autovacuum would have done to a database filled by
real runs (without statistics the planner hash-joins whole tables for every page). No emulator is
started: ``decide`` has no way to call the API. Prints the figures, a fixed CPU probe (this
machine's speed), the load average (the machine is shared) and, beside each wall time, this
process's CPU time (SQLite runs inside it, so on a busy machine the CPU time is the figure
that compares).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from broker_memory import cpu_probe
from stack import loadavg

from worker import store
from worker.decide import decide_job, load_policy, render_changes
from worker.policy import parse_policy

SERVICE = "baselineCheck_global"
V2 = """\
name = "default"
version = "2"

[[rules]]
name = "library-hit"
custom_image = true
decision = "block"

[[rules]]
name = "explosions"
labels = ["violent_*"]
min_confidence = 80
decision = "review"
priority = 70

[[rules]]
name = "high"
risk_level = "high"
decision = "block"

[[rules]]
name = "rest"
decision = "pass"
"""


def build_job(engine: sa.Engine, refs: int) -> store.Job:
    job = store.get_or_create_job(engine, "bench-decide", SERVICE, "customImage")
    rows = [
        store.NewItem(
            kind="url",
            ref_key=f"https://img.example/{n}.png",
            image_url=f"https://img.example/{n}.png",
            oss_bucket=None,
            oss_object=None,
            oss_region=None,
            data_id=None,
            referer=None,
            source="bench.txt",
            line=n,
            state="pending",
        )
        for n in range(1, refs + 1)
    ]
    store.insert_items(engine, job.id, rows)
    moment = datetime.now(timezone.utc)
    i = store.items
    with engine.begin() as conn:
        ids = list(conn.execute(sa.select(i.c.id).where(i.c.job_id == job.id)).scalars())
        answered = [n for k, n in enumerate(ids) if k % 100 != 0]
        failed = [n for k, n in enumerate(ids) if k % 100 == 0]
        levels = ("high", "medium", "none", "none", "none")
        ext = {"CustomImage": [{"LibId": "lib1", "LibName": "A", "ImageId": "1"}]}
        conn.execute(
            sa.insert(store.results),
            [
                {
                    "item_id": n,
                    "job_id": job.id,
                    "service": SERVICE,
                    "request_id": f"REQ-{n}",
                    "code": "200",
                    "msg": "OK",
                    "risk_level": levels[n % 5],
                    "ext": ext if n % 10 == 0 else None,
                    "raw": {"Code": 200},
                    "moderated_at": moment,
                }
                for n in answered
            ],
        )
        r = store.results
        conn.execute(
            sa.insert(store.result_labels).from_select(
                ["result_id", "job_id", "item_id", "label", "confidence", "risk_level"],
                sa.select(
                    r.c.id,
                    r.c.job_id,
                    r.c.item_id,
                    sa.literal("violent_explosion"),
                    (r.c.item_id % 100).cast(sa.Float),
                    r.c.risk_level,
                ).where(r.c.job_id == job.id),
            )
        )
        conn.execute(sa.update(i).where(i.c.id.in_(answered)).values(state="done"))
        conn.execute(sa.update(i).where(i.c.id.in_(failed)).values(state="failed", last_code="405"))
    found = store.get_job(engine, job.name)
    assert found is not None
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refs", type=int, default=100_000)
    parser.add_argument("--db", default=None, help="a new or empty database (default: SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or f"sqlite:///{Path(tmp) / 'decide.db'}"
        store.upgrade(url)
        engine = store.make_engine(url)
        print(
            f"decide: {args.refs:,} stored answers on {engine.dialect.name}; "
            f"load average {loadavg()}; CPU probe {cpu_probe():.0f} ms",
            flush=True,
        )
        started = time.perf_counter()
        job = build_job(engine, args.refs)
        if engine.dialect.name == "postgresql":
            # what autovacuum does to a database filled over hours; a bulk load leaves none
            with engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
        print(f"  job built in {time.perf_counter() - started:.1f} s (not timed below)", flush=True)
        runs = (
            ("default v1, first decisions", load_policy(None)),
            ("default v1 again (a rerun)", load_policy(None)),
            ("v2: labels, confidences, Ext", parse_policy(V2, "v2.toml")),
        )
        for title, policy in runs:
            cpu = time.process_time()
            out = decide_job(engine, job, policy, "bench")
            cpu = time.process_time() - cpu
            rate = out.items / out.seconds
            print(
                f"  {title:<32} {out.seconds:6.2f} s (CPU {cpu:5.2f} s)  {rate:>8,.0f} items/s  "
                f"written {out.written:>7,}  changes: {render_changes(out.changes)}",
                flush=True,
            )
        print(f"  load average after {loadavg()}", flush=True)
        engine.dispose()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
