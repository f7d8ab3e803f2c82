"""cProfile (CPU time) every thread of a process, for ``bench/throughput.py --profile``.

Put this directory on PYTHONPATH and set IMGMOD_BENCH_PROFILE=FILE: each thread gets its own
profiler on its first Python call, and at exit the merged statistics are written to
FILE.PID, one file per process: a worker group's supervisor and its worker processes all
inherit the variable, and one shared FILE kept only the last to exit (the supervisor's
start-up). Read them with ``python -m pstats FILE.PID`` or ``summary.py``. cProfile slows the
process down by 1.5-2x; read the shares, not the absolute times.

With IMGMOD_BENCH_THREAD_NAMES=1 (``bench/throughput.py --by-thread``), each thread gives the
kernel its Python name instead (``imgmod-call``, ``executor-0`` for Celery's pool, ``main``;
the pool index dropped, 15 bytes at most), and nothing is profiled: each thread's
``/proc/PID/task/TID/schedstat`` then tells what its kind costs, at full speed
(:func:`stack.thread_cpu`).
"""

from __future__ import annotations

import atexit
import cProfile
import ctypes
import os
import pstats
import re
import sys
import threading
import time

_OUT = os.environ.get("IMGMOD_BENCH_PROFILE")
_profiles: list[cProfile.Profile] = []
_lock = threading.Lock()


def _start_here(*_: object) -> None:
    # Per-thread CPU time, not wall time: waiting for a socket, a lock or the GIL costs nothing.
    profile = cProfile.Profile(time.thread_time_ns, 1e-9)
    with _lock:
        _profiles.append(profile)
    profile.enable()  # replaces this hook for the calling thread


def _dump() -> None:
    for profile in _profiles:
        profile.disable()
    with _lock:
        profiles = [p for p in _profiles if p.getstats()]
    if profiles and _OUT:
        stats = pstats.Stats(profiles[0])
        for profile in profiles[1:]:
            stats.add(profile)
        stats.dump_stats(f"{_OUT}.{os.getpid()}")


_PR_SET_NAME = 15


def kernel_name(python_name: str) -> str:
    """The kind of a thread, from its Python name: ``imgmod-call_7`` -> ``imgmod-call``,
    ``ThreadPoolExecutor-0_12`` -> ``executor-0``, ``MainThread`` -> ``main``."""
    name = re.sub(r"_\d+$", "", python_name)
    name = name.replace("ThreadPoolExecutor-", "executor-").replace("MainThread", "main")
    return name[:15]


def _name_for_kernel(python_name: str) -> None:
    """Name the calling thread for the kernel (only a thread can name itself)."""
    try:
        libc = ctypes.CDLL(None)
        libc.prctl(_PR_SET_NAME, kernel_name(python_name).encode(), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the figures fall back to the process's name
        pass


def _install_thread_names() -> None:
    run = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

    def named(self: threading.Thread) -> None:
        # self.name, not current_thread(): the thread is not registered yet, and asking would
        # make a dummy Thread for it.
        _name_for_kernel(self.name)
        run(self)

    threading.Thread._bootstrap_inner = named  # type: ignore[attr-defined]
    _name_for_kernel(threading.main_thread().name)


if os.environ.get("IMGMOD_BENCH_THREAD_NAMES") == "1":
    _install_thread_names()
elif _OUT:
    threading.setprofile(_start_here)
    _start_here()
    atexit.register(_dump)
    sys.modules.setdefault("imgmod_bench_profiling", sys.modules[__name__])
