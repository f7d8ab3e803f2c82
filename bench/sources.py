"""How long the reader takes over the worst 1 MiB lines: one JSON object repeating its keys, and
a CSV header naming a field again after thousands of columns.

    .venv/bin/python bench/sources.py [--kib 1024]

Both checks used to count each key in the whole list (``keys.count(k)`` per key): a 419 KiB
line took 39 s, one at the 1 MiB cap about 4 minutes. They count once per line now, so these
lines cost what any line of their size costs (the numbers are in bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from worker.sources import MAX_LINE_BYTES, Rejected, read_inputs


def _fill(unit: str, size: int) -> str:
    return unit * (size // len(unit))


def repeated_keys_line(size: int) -> str:
    """Distinct keys, each given twice: the old check compared every key with every other."""
    parts, total, i = [], 2, 0
    while total < size - 40:
        part = f'"key{i}": 1, "key{i}": 2, '
        parts.append(part)
        total += len(part)
        i += 1
    return "{" + "".join(parts) + '"url": "https://e.com/1.jpg"}'


def many_unknown_keys_line(size: int) -> str:
    parts, total, i = [], 2, 0
    while total < size - 40:
        part = f'"k{i}": 1, '
        parts.append(part)
        total += len(part)
        i += 1
    return "{" + "".join(parts) + '"url": "https://e.com/1.jpg"}'


def csv_header(size: int) -> str:
    cols, total, i = [], 0, 0
    while total < size - 20:
        col = f"c{i},"
        cols.append(col)
        total += len(col)
        i += 1
    return "".join(cols) + "url,dataId,url"


def time_one(directory: Path, name: str, text: str) -> tuple[float, str]:
    path = directory / name
    path.write_text(text + "\n", encoding="utf-8")
    started = time.perf_counter()
    records = list(read_inputs([str(path)]))
    elapsed = time.perf_counter() - started
    first = records[0]
    what = f"rejected: {first.reason[:60]}" if isinstance(first, Rejected) else "accepted"
    return elapsed, what


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kib", type=int, default=MAX_LINE_BYTES // 1024)
    size = min(parser.parse_args().kib * 1024, MAX_LINE_BYTES)
    cases = [
        ("repeated.jsonl", "JSONL, every key given twice", repeated_keys_line(size)),
        ("unknown.jsonl", "JSONL, distinct unknown keys", many_unknown_keys_line(size)),
        ("header.csv", "CSV header, a column twice", csv_header(size)),
    ]
    with tempfile.TemporaryDirectory(prefix="imgmod-bench-") as tmp:
        for name, label, text in cases:
            elapsed, what = time_one(Path(tmp), name, text)
            print(f"{label:<32} {len(text) / 1024:7.0f} KiB  {elapsed:6.3f} s  {what}")


if __name__ == "__main__":
    main()
