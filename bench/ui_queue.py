"""The review page's queue with 1,000,000 results in PostgreSQL: p50/p95 of each page.

    .venv/bin/python bench/ui_queue.py [--rows 1000000] [--rounds 200] [--admin-url postgresql://root@127.0.0.1:5432/test]

Makes a fresh database (dropped at the end), migrates it, bulk-fills it in SQL
(generate_series, not the API): two jobs, ``--rows`` items all answered, one label each, a
policy decision per item (a tenth ``review`` with priorities 0-99), and reviewers' decisions
over the top half of the queue already (the rows the queue has to step past: the hard case).
Then starts a real ``imgmod ui`` on a loopback port, signs in, and times over HTTP:

* ``floor``: the sign-in page (no SQL): what HTTP, the session and a template cost here;
* ``decide + next``: POST a decision, follow the redirect to the next image (claim, details,
  preload) — what a reviewer waits for between two images;
* ``queue reload``: GET /queue holding an image;
* ``queue of one job``; ``browse`` with filters (decision, label, confidence, RiskLevel);

Target (issue #16): the queue page under 50 ms p95. Prints the figures, a fixed CPU probe
(this machine's speed) and the load average (the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg2
import requests
from broker_memory import cpu_probe
from stack import loadavg

from worker import store
from worker.processes import wait_until
from worker.ui.auth import add_user

FILL = [
    """INSERT INTO jobs (name, service, info_type, created_at, total_lines, accepted)
       VALUES ('bench-a', 'baselineCheck_global', '', now(), %(a)s, %(a)s),
              ('bench-b', 'baselineCheck_global', '', now(), %(b)s, %(b)s)""",
    """INSERT INTO items (job_id, service, kind, ref_key, image_url, source, line, state,
                          attempts, created_at, updated_at, finished_at)
       SELECT CASE WHEN g <= %(a)s THEN 1 ELSE 2 END, 'baselineCheck_global', 'url',
              'https://img.example/' || g || '.png',
              'https://img.example/' || g || '.png', 'bench.txt', g, 'done', 1, now(), now(), now()
       FROM generate_series(1, %(n)s) g""",
    """INSERT INTO results (item_id, job_id, service, request_id, code, risk_level, raw,
                            moderated_at)
       SELECT g, CASE WHEN g <= %(a)s THEN 1 ELSE 2 END, 'baselineCheck_global', 'req-' || g, '200',
              CASE g %% 10 WHEN 0 THEN 'high' WHEN 1 THEN 'medium' ELSE 'none' END, '{}'::jsonb,
              now() - (g %% 86400) * interval '1 second'
       FROM generate_series(1, %(n)s) g""",
    """INSERT INTO result_labels (result_id, job_id, item_id, label, confidence, risk_level)
       SELECT g, CASE WHEN g <= %(a)s THEN 1 ELSE 2 END, g,
              CASE g %% 10 WHEN 0 THEN 'pornographic_adultContent' WHEN 1 THEN 'violent_explosion'
                   ELSE 'nonLabel' END,
              CASE WHEN g %% 10 < 2 THEN 50 + (g * 7 %% 50) END,
              CASE g %% 10 WHEN 0 THEN 'high' WHEN 1 THEN 'medium' ELSE 'none' END
       FROM generate_series(1, %(n)s) g""",
    """INSERT INTO decisions (item_id, job_id, decision, priority, rule, policy_name,
                              policy_version, source, actor, decided_at)
       SELECT g, CASE WHEN g <= %(a)s THEN 1 ELSE 2 END,
              CASE g %% 10 WHEN 0 THEN 'block' WHEN 1 THEN 'review' ELSE 'pass' END,
              CASE WHEN g %% 10 = 1 THEN g * 37 %% 100 END,
              CASE g %% 10 WHEN 0 THEN 'high' WHEN 1 THEN 'medium' ELSE 'low' END,
              'default', '1', 'policy', 'bench', now()
       FROM generate_series(1, %(n)s) g""",
    # reviewers already cleared the top half of the queue (priority 50-99)
    """INSERT INTO decisions (item_id, job_id, decision, source, actor, decided_at)
       SELECT item_id, job_id, 'pass', 'review', 'earlier', now()
       FROM decisions WHERE decision = 'review' AND priority >= 50 ORDER BY id""",
    "ANALYZE",
]


def timed(label: str, rounds: int, fn: Callable[[], None]) -> None:
    fn()  # warm
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    p95 = times[int(len(times) * 0.95) - 1]
    print(
        f"  {label:<28} p50 {statistics.median(times):6.1f} ms   p95 {p95:6.1f} ms   "
        f"max {times[-1]:6.1f} ms   ({rounds} requests)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--admin-url", default="postgresql://root@127.0.0.1:5432/test")
    args = parser.parse_args()
    print(f"load average {loadavg()}; CPU probe {cpu_probe():.0f} ms", flush=True)
    name = f"imgmod_ui_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(args.admin_url)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    url = args.admin_url.rsplit("/", 1)[0] + "/" + name
    server: subprocess.Popen[str] | None = None
    try:
        store.upgrade(url)
        started = time.perf_counter()
        sizes = {"n": args.rows, "a": args.rows * 9 // 10, "b": args.rows - args.rows * 9 // 10}
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            for statement in FILL:
                cur.execute(statement, sizes)
        print(
            f"filled {args.rows:,} items, results, labels and decisions in "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )
        with tempfile.TemporaryDirectory() as tmp:
            users = Path(tmp) / "users"
            add_user(users, "bench", "reviewer", "bench-password")
            log = Path(tmp) / "ui.log"
            env = {
                "IMGMOD_DATABASE_URL": url,
                "IMGMOD_UI_USERS": str(users),
                "IMGMOD_LOG_LEVEL": "WARNING",
            }
            with log.open("w") as sink:
                server = subprocess.Popen(
                    [sys.executable, "-m", "worker.cli", "ui", "--port", "0"],
                    env={**os.environ, **env},
                    stdout=sink,
                    stderr=sink,
                    text=True,
                )
            found: list[str] = []

            def up() -> bool:
                found[:] = re.findall(r"imgmod ui: (http://[\d.:]+)/", log.read_text())
                return bool(found) or server.poll() is not None

            wait_until(up, 60, "imgmod ui to listen")
            if not found:
                sys.exit(log.read_text())
            base = found[0]
            client, anonymous = requests.Session(), requests.Session()
            page = client.get(base + "/login", timeout=30).text
            token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
            client.post(
                base + "/login",
                timeout=30,
                data={"csrf": token, "name": "bench", "password": "bench-password"},
            )
            print(
                f"queue: {args.rows // 10:,} review decisions, the top half already reviewed",
                flush=True,
            )

            def post_and_next() -> None:
                page = state["page"]
                item = re.search(r'id="card" data-item="(\d+)"', page).group(1)
                token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
                got = client.post(
                    base + "/queue/decide",
                    timeout=30,
                    data={"csrf": token, "item": item, "decision": "pass"},
                )
                assert got.status_code == 200 and 'id="card"' in got.text
                state["page"] = got.text

            timed(
                "floor: sign-in page, no SQL",
                args.rounds,
                lambda: anonymous.get(base + "/login", timeout=30).raise_for_status(),
            )
            state = {"page": client.get(base + "/queue", timeout=30).text}
            timed("decide + next image", args.rounds, post_and_next)
            timed(
                "queue reload (held image)",
                args.rounds,
                lambda: client.get(base + "/queue", timeout=30).raise_for_status(),
            )
            timed(
                "queue of one job",
                args.rounds,
                lambda: client.get(base + "/queue?job=bench-b", timeout=30).raise_for_status(),
            )
            for label, query in (
                ("browse decision=review", "job=bench-a&decision=review"),
                ("browse label+confidence", "label=violent_explosion&min=90"),
                ("browse risk=high, one job", "job=bench-b&risk=high"),
            ):
                timed(
                    label,
                    max(20, args.rounds // 4),
                    lambda q=query: client.get(f"{base}/browse?{q}", timeout=60).raise_for_status(),
                )
        print(f"load average after {loadavg()}", flush=True)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=20)
        with admin.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


if __name__ == "__main__":
    main()
