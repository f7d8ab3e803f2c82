"""Where a profiled worker's CPU went: own time by package, blocking calls left out.

.venv/bin/python bench/profiling/summary.py FILE [--top 25]
"""

from __future__ import annotations

import argparse
import pstats
from collections import Counter

# Builtins whose own time is waiting, not computing (a socket read, a lock, a sleep, epoll,
# SQLite waiting on its busy_timeout for the write lock).
BLOCKING = (
    "recv_into",
    "recv' of",
    "time.sleep",
    "'acquire' of",
    "'get' of '_queue",
    "'poll' of",
    "'execute' of 'sqlite3",
    "'wait' of",
    "select.select",
)


def package(filename: str) -> str:
    if filename == "~":
        return "builtins"
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in filename:
            rest = filename.split(marker, 1)[1]
            return rest.split("/", 1)[0].removesuffix(".py") if "/" in rest else rest
    return filename


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    stats = pstats.Stats(args.file).stats  # type: ignore[attr-defined]
    by_package: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    for (filename, line, name), (_cc, _nc, tottime, _ct, _callers) in stats.items():
        label = f"{package(filename)}:{name}" if filename != "~" else name
        if filename == "~" and any(b in name for b in BLOCKING):
            continue
        by_package[package(filename)] += tottime
        by_function[f"{label} ({filename.rsplit('/', 1)[-1]}:{line})"] += tottime
    total = sum(by_package.values())
    print(f"own time outside blocking calls: {total:.2f} s")
    for name, seconds in by_package.most_common(args.top):
        print(f"  {100 * seconds / total:5.1f}%  {name}")
    print("functions:")
    for name, seconds in by_function.most_common(args.top):
        print(f"  {100 * seconds / total:5.1f}%  {name}")


if __name__ == "__main__":
    main()
