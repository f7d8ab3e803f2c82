"""CPU spent under each function of a profile, blocking calls left out (gprof-style).

    .venv/bin/python bench/profiling/inclusive.py FILE [--top 40] [--match TEXT]

cProfile's cumulative time counts the time a thread spent blocked (a socket read, a lock, the
GIL) under whatever called it, which buries what a step costs in CPU. Here each function's own
time, blocking builtins excluded (:data:`summary.BLOCKING`), is shared out to its callers in
proportion to their calls, so a function's figure is the CPU of its subtree.
"""

from __future__ import annotations

import argparse
import pstats
import sys
from functools import cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from summary import BLOCKING  # noqa: E402

sys.setrecursionlimit(100_000)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--match", default="")
    args = parser.parse_args()
    stats = pstats.Stats(args.file).stats  # type: ignore[attr-defined]
    callees: dict[tuple, list[tuple[tuple, float]]] = {}
    for func, (_cc, nc, _tt, _ct, callers) in stats.items():
        for caller, edge in callers.items():
            share = edge[1] / nc if nc else 0.0  # this caller's share of the function's calls
            callees.setdefault(caller, []).append((func, share))

    def own(func: tuple) -> float:
        filename, _line, name = func
        if filename == "~" and any(b in name for b in BLOCKING):
            return 0.0
        return float(stats[func][2])

    visiting: set[tuple] = set()

    @cache
    def inclusive(func: tuple) -> float:
        if func in visiting:
            return 0.0
        visiting.add(func)
        total = own(func) + sum(inclusive(c) * share for c, share in callees.get(func, ()))
        visiting.discard(func)
        return total

    grand = sum(own(f) for f in stats)
    rows = sorted(((inclusive(f), f) for f in stats), reverse=True)
    print(f"CPU outside blocking calls: {grand:.2f} s")
    shown = 0
    for seconds, (filename, line, name) in rows:
        label = f"{name} ({'/'.join(filename.rsplit('/', 2)[-2:])}:{line})"
        if args.match and args.match not in label:
            continue
        print(f"  {100 * seconds / grand:5.1f}%  {stats[(filename, line, name)][1]:8d}  {label}")
        shown += 1
        if shown >= args.top:
            break


if __name__ == "__main__":
    main()
