"""The input kind ``-``: standard input, sniffed per line.

A line starting with ``{`` is read as JSON (:mod:`~worker.sources.jsonl`), any other as a
``.txt`` line (:mod:`~worker.sources.txt`).
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from typing import IO

from worker.sources.jsonl import json_line
from worker.sources.lines import LineParser, parse_lines
from worker.sources.records import Defaults, Record
from worker.sources.txt import txt_line


def claims_stdin(path: str) -> bool:
    return path == "-"


def check_stdin(path: str) -> None:
    """Standard input is always readable here: nothing to refuse before reading."""


def read_stdin(path: str, defaults: Defaults, stdin: IO[bytes] | None) -> Iterator[Record]:
    """The records of ``stdin`` (the process's standard input when None). Each read is a new
    input: its rejections carry a fresh token, so two runs of ``-`` keep their own rows."""
    origin = f"stdin:{uuid.uuid4().hex}"
    yield from parse_lines(path, origin, stdin or sys.stdin.buffer, _sniffing_parser(defaults))


def _sniffing_parser(defaults: Defaults) -> LineParser:
    def parse(source: str, number: int, text: str) -> Record | None:
        handler = json_line if text.lstrip().startswith("{") else txt_line
        return handler(source, number, text, defaults)

    return parse
