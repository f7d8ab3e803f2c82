"""cProfile (CPU time) every thread of a process, for ``bench/throughput.py --profile``.

Put this directory on PYTHONPATH and set IMGMOD_BENCH_PROFILE=FILE: each thread gets its own
profiler on its first Python call, and at exit the merged statistics are written to
FILE.PID, one file per process: a worker group's supervisor and its worker processes all
inherit the variable, and one shared FILE kept only the last to exit (the supervisor's
start-up). Read them with ``python -m pstats FILE.PID`` or ``summary.py``. cProfile slows the
process down by 1.5-2x; read the shares, not the absolute times.
"""

from __future__ import annotations

import atexit
import cProfile
import os
import pstats
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


if _OUT:
    threading.setprofile(_start_here)
    _start_here()
    atexit.register(_dump)
    sys.modules.setdefault("imgmod_bench_profiling", sys.modules[__name__])
