"""One job's world as real processes: a database, a broker, the emulator, the sample image server,
the Celery workers a test starts, and ``imgmod`` run in the foreground or the background.

The integration tests' ``pipeline``, the fault tests' ``stack``/``any_db_stack`` and the service
fault tests' ``world`` are all this class, configured by their fixtures (settings, default worker
threads, and whether teardown kills the workers or lets them finish).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tests.support.commands import run_imgmod, start_imgmod
from tests.support.emulator import Emulator
from worker import store
from worker.emulator import TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET
from worker.processes import (
    ImageServerHandle,
    PrivateRedis,
    WorkerProcess,
    start_worker,
    wait_until,
)

# A worker's log line for each retry: "... code=405 attempts=2 request_id=... retry in 0.4s"
RETRY_LINE = re.compile(r"code=(.+?) attempts=(\d+) request_id=\S+ retry in")


def stack_env(
    database_url: str, broker_url: str, emulator: Emulator, **settings: str
) -> dict[str, str]:
    """The settings every stack needs (database, broker, the emulator and its test key, 100 QPS),
    with ``settings`` added or overriding them."""
    return {
        "IMGMOD_DATABASE_URL": database_url,
        "IMGMOD_BROKER_URL": broker_url,
        "IMGMOD_ENDPOINT": emulator.url,
        "IMGMOD_QPS": "100",
        "ALIBABA_CLOUD_ACCESS_KEY_ID": TEST_ACCESS_KEY_ID,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": TEST_ACCESS_KEY_SECRET,
        **settings,
    }


@dataclass
class Stack:
    """One job's world, with the handles a test needs to drive it, read it and break it."""

    env: dict[str, str]
    tmp: Path
    emulator: Emulator
    images: ImageServerHandle
    broker: PrivateRedis | None = None  # set when the test owns its broker (may kill it)
    concurrency: int = 16  # a worker's threads unless the test says otherwise
    kill_on_stop: bool = False  # teardown: SIGKILL the workers, or SIGTERM and wait 30 s
    workers: list[WorkerProcess] = field(default_factory=list)
    background: list[subprocess.Popen[str]] = field(default_factory=list)
    _engine: sa.Engine | None = field(default=None, repr=False)

    @property
    def lease_seconds(self) -> int:
        return int(self.env["IMGMOD_LEASE_SECONDS"])

    @property
    def visibility_timeout(self) -> int:
        return int(self.env["IMGMOD_VISIBILITY_TIMEOUT"])

    @property
    def engine(self) -> sa.Engine:
        """The test's own engine on the stack's database (disposed at teardown)."""
        if self._engine is None:
            self._engine = store.make_engine(self.env["IMGMOD_DATABASE_URL"])
        return self._engine

    # -- processes -------------------------------------------------------------------------

    def start_worker(self, concurrency: int | None = None, **env: str) -> WorkerProcess:
        """A Celery worker with the stack's settings and ``env`` on top; waits until ready."""
        n = len(self.workers)
        proc = start_worker(
            {**self.env, **env},
            self.tmp / f"worker{n}.log",
            concurrency=concurrency or self.concurrency,
            hostname=f"w{n}@%h",
        )
        self.workers.append(proc)
        return proc

    def imgmod(
        self, *args: str, timeout: float = 180, check: bool = False, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return run_imgmod({**self.env, **env}, *args, timeout=timeout, check=check)

    def imgmod_background(self, *args: str, **env: str) -> subprocess.Popen[str]:
        """``imgmod`` running while the test breaks things; ``communicate()`` to collect it."""
        proc = start_imgmod({**self.env, **env}, *args)
        self.background.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.background:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
        for w in self.workers:
            if self.kill_on_stop:
                w.kill()
            else:
                w.terminate(timeout=30)
        if self._engine is not None:
            self._engine.dispose()

    # -- inputs ----------------------------------------------------------------------------

    def write(self, name: str, lines: list[str]) -> Path:
        path = self.tmp / name
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def write_urls(self, name: str, n: int) -> tuple[Path, list[str]]:
        urls = [self.images.image_url(i) for i in range(n)]
        return self.write(name, urls), urls

    def urls(self, n: int, start: int = 0) -> Path:
        urls = [self.images.image_url(i) for i in range(start, start + n)]
        return self.write(f"urls{start}-{n}.txt", urls)

    # -- reading the job -------------------------------------------------------------------

    def job_id(self, name: str) -> int:
        job = store.get_job(self.engine, name)
        assert job is not None, f"no job {name!r}"
        return job.id

    def counts(self, name: str) -> dict[str, int]:
        return store.state_counts(self.engine, self.job_id(name))

    def states(self, job: str) -> dict[str, int]:
        """The non-zero state counts, as ``imgmod status --json`` reports them."""
        out = json.loads(self.imgmod("status", job, "--json").stdout)["states"]
        return {k: v for k, v in out.items() if v}

    def wait_for_job(self, name: str) -> None:
        """Wait until the job's rows exist (the producer is a separate process)."""
        wait_until(lambda: store.get_job(self.engine, name) is not None, 60, f"job {name}")

    def scalar(self, sql: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(sa.text(sql)).scalar()

    def rows(self, sql: str) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.text(sql)))

    def results_per_item_max(self) -> int:
        return int(
            self.scalar(
                "SELECT coalesce(max(n), 0) FROM "
                "(SELECT count(*) AS n FROM results GROUP BY item_id, service) AS t"
            )
        )

    def worker_logs(self) -> str:
        return "\n".join(f"--- worker {i}\n{w.log()[-4000:]}" for i, w in enumerate(self.workers))

    def retried_codes(self) -> Counter[str]:
        """Retry code of every "retry in" line the workers logged."""
        return Counter(m.group(1) for w in self.workers for m in RETRY_LINE.finditer(w.log()))

    def settled_stats(self) -> dict[str, Any]:
        """Emulator counters once no call is in flight (a slow answer may still be running)."""
        wait_until(lambda: self.emulator.stats()["in_flight"] == 0, 30, "calls in flight to end")
        return self.emulator.stats()


@contextmanager
def open_stack(
    env: dict[str, str],
    tmp: Path,
    emulator: Emulator,
    images: ImageServerHandle,
    **options: Any,
) -> Iterator[Stack]:
    """A :class:`Stack` on a migrated database (``imgmod db upgrade``), stopped afterwards;
    ``options`` are the other :class:`Stack` fields (broker, concurrency, kill_on_stop)."""
    upgrade = run_imgmod(env, "db", "upgrade", timeout=120)
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    stack = Stack(env, tmp, emulator, images, **options)
    try:
        yield stack
    finally:
        stack.stop()
