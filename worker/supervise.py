"""``imgmod worker`` on a host with several cores: one Celery worker process per core, each a
thread pool, started and stopped together.

Why several processes: a task spends a few milliseconds of Python per image (claim, sign, parse,
store, ack), and one process runs Python on one core at a time (the GIL). At 100 images/s that
is most of a slow core, so one process cannot hold the cap once the host is shared; two
processes of half the threads each use both cores (``bench/RESULTS.md``, issue 12).

Why not Celery's prefork pool: it runs one task at a time per child process, and a worker needs
QPS x latency calls in flight (100-200 at 100/s), each mostly waiting on the network: that is
100-200 processes of ~100 MiB. A few thread-pool processes, each a full ``celery -A worker
worker`` (its own runtime, leases, window refill; one shared limiter in Redis), cost one
interpreter per core.

The supervisor only starts, forwards signals and waits; each child is exactly the worker
``celery -A worker worker`` runs, so every guarantee of a single worker holds per child.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import FrameType

# Signals a supervisor passes on to every child: Celery's warm (TERM, INT) and cold (QUIT)
# shutdowns, and HUP (Celery restarts itself in place).
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers narrow), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def processes_for(setting: int, cores: int) -> int:
    """Worker processes to run: ``setting`` (IMGMOD_WORKER_PROCESSES, ``--processes``), or
    one per core when it is 0 (``auto``). Pure."""
    return setting if setting > 0 else max(1, cores)


def threads_per_process(threads: int, processes: int) -> int:
    """The worker's threads (IMGMOD_WORKER_CONCURRENCY, ``-c``) split over its processes,
    rounded up: the host keeps the calls in flight it was sized for. Pure."""
    return max(1, math.ceil(threads / processes))


def member_hostname(hostname: str | None, index: int) -> str:
    """Celery's node name of child ``index``: distinct per child (``name-2@host``). Pure."""
    if not hostname:
        return f"imgmod{index}@%h"
    name, at, host = hostname.partition("@")
    return f"{name}-{index}@{host}" if at else f"{hostname}-{index}"


@dataclass(frozen=True)
class Child:
    """One worker process to start: its argv and the settings its environment carries."""

    argv: list[str]
    env: Mapping[str, str]


def supervise(children: Sequence[Child]) -> int:
    """Run ``children`` together until they exit; returns the exit code for the command.

    TERM, INT, QUIT and HUP go to every child (a warm shutdown finishes the calls in flight).
    A child that exits on its own (it crashed, or its startup failed) stops the others warmly,
    and its exit code (1 if it was 0) becomes the supervisor's: a process manager restarts the
    group, and no host silently runs with half its workers. After a requested stop, the
    highest exit code of the children is returned (0 when all stopped cleanly).
    """
    procs: dict[int, subprocess.Popen[bytes]] = {}
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if signum != signal.SIGHUP:
            stopping = True
        for proc in procs.values():
            if proc.returncode is None:
                proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    codes: list[int] = []
    first_failure: int | None = None
    try:
        for child in children:
            if stopping:  # told to stop while starting: start no more
                break
            proc = subprocess.Popen(child.argv, env={**os.environ, **child.env})  # noqa: S603
            procs[proc.pid] = proc
        while any(p.returncode is None for p in procs.values()):
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            exited = procs.get(pid)
            if exited is None:
                continue
            exited.returncode = os.waitstatus_to_exitcode(status)
            codes.append(abs(exited.returncode))
            if not stopping:
                first_failure = abs(exited.returncode) or 1
                print(
                    f"imgmod worker: worker process {pid} exited with {exited.returncode}; "
                    "stopping the others",
                    file=sys.stderr,
                    flush=True,
                )
                stopping = True
                for other in procs.values():
                    if other.returncode is None:
                        other.send_signal(signal.SIGTERM)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if first_failure is not None:
        return first_failure
    return max(codes, default=0)
