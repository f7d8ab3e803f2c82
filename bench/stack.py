"""What the end-to-end benchmarks run against, and how they read a process's cost.

Fresh databases (a temp SQLite file, or a ``imgmod_bench_<random>`` PostgreSQL database dropped
afterwards), the environment a worker and ``imgmod`` need, and /proc readings: CPU seconds
(utime+stime of a process and its descendants) and peak RSS (VmHWM).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from worker import store
from worker.emulator import TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET

PG_ADMIN_URL = os.environ.get("IMGMOD_BENCH_PG_URL", "postgresql://root@127.0.0.1:5432/test")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@contextmanager
def fresh_database(kind: str) -> Iterator[str]:
    """A new, migrated database URL of ``kind`` (sqlite or postgresql), removed afterwards."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="imgmod-bench-") as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            store.upgrade(url)
            yield url
        return
    import psycopg2

    name = f"imgmod_bench_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(PG_ADMIN_URL)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    try:
        store.upgrade(url)
        yield url
    finally:
        with admin.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


def pipeline_env(database_url: str, broker_url: str, endpoint: str, qps: float) -> dict[str, str]:
    return {
        "IMGMOD_DATABASE_URL": database_url,
        "IMGMOD_BROKER_URL": broker_url,
        "IMGMOD_ENDPOINT": endpoint,
        "IMGMOD_QPS": repr(qps),
        "ALIBABA_CLOUD_ACCESS_KEY_ID": TEST_ACCESS_KEY_ID,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": TEST_ACCESS_KEY_SECRET,
    }


def imgmod(env: Mapping[str, str], *args: str) -> subprocess.Popen[bytes]:
    """Start ``imgmod ARGS`` (as ``python -m worker.cli``) with ``env`` added to ours."""
    return subprocess.Popen(
        [sys.executable, "-m", "worker.cli", *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(p) for p in path.read_text().split()]
    except OSError:
        return []


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(_children(current))
    return found


def thread_cpu(pids: Iterable[int]) -> Counter[str]:
    """CPU seconds of every live thread of ``pids`` and their descendants, summed by the
    thread's kernel name (``comm``; the bench's sitecustomize sets it to the Python thread's
    kind). A thread that has ended is not counted: take two readings of long-lived threads and
    subtract.

    Read from ``schedstat`` (nanoseconds on the CPU), not from ``stat``'s utime+stime: those are
    sampled at the clock tick, per thread, and a thread that runs in bursts shorter than a tick
    slips between the samples. Over 25 s of a job, the threads' ``stat`` added up to 1.82 s of
    a process's 2.91 s; their ``schedstat`` to 2.92 s."""
    by_name: Counter[str] = Counter()
    for pid in pids:
        for p in descendants(pid):
            try:
                tids = os.listdir(f"/proc/{p}/task")
            except OSError:
                continue
            for tid in tids:
                try:
                    name = Path(f"/proc/{p}/task/{tid}/comm").read_text().strip()
                    on_cpu_ns = Path(f"/proc/{p}/task/{tid}/schedstat").read_text().split()[0]
                except (OSError, IndexError):
                    continue
                by_name[name] += int(on_cpu_ns) / 1e9
    return by_name


def cpu_seconds(pid: int) -> float:
    """utime+stime of ``pid`` and its live descendants, plus children it already reaped."""
    total = 0.0
    for index, p in enumerate(descendants(pid)):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the ")" of comm: state is field 0, utime 11, stime 12, cutime 13, cstime 14.
        ticks = int(fields[11]) + int(fields[12])
        if index == 0:
            ticks += int(fields[13]) + int(fields[14])
        total += ticks / CLOCK_TICKS
    return total


def peak_rss_mb(pid: int) -> float:
    """VmHWM of one process, in MiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages: the machine is shared, say how busy it was."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def job_span(engine: sa.Engine) -> tuple[float, float, int, dict[str, int]]:
    """(first row inserted, last result stored) as epoch seconds, results, counts by state."""
    with engine.connect() as conn:
        first = conn.execute(sa.select(sa.func.min(store.items.c.created_at))).scalar()
        last = conn.execute(sa.select(sa.func.max(store.results.c.moderated_at))).scalar()
        n = conn.execute(sa.select(sa.func.count()).select_from(store.results)).scalar()
        counts = dict(
            conn.execute(
                sa.select(store.items.c.state, sa.func.count()).group_by(store.items.c.state)
            ).all()
        )
    return (
        first.timestamp() if first else 0.0,
        last.timestamp() if last else 0.0,
        int(n or 0),
        {str(k): int(v) for k, v in counts.items()},
    )


def row_counts(engine: sa.Engine) -> tuple[int, int]:
    """(rows, rows still pending, queued or running)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(sa.func.count()).select_from(store.items)).scalar()
        open_ = conn.execute(
            sa.select(sa.func.count())
            .select_from(store.items)
            .where(store.items.c.state.in_(("pending", "queued", "running")))
        ).scalar()
    return int(rows or 0), int(open_ or 0)
