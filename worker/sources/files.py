"""The input kind "a local file": its format chosen by extension (case-insensitive).

``.txt`` (:mod:`~worker.sources.txt`), ``.csv`` (:mod:`~worker.sources.csv_file`), ``.jsonl`` /
``.ndjson`` (:mod:`~worker.sources.jsonl`). A new format is a module with a parser factory and
one line in :data:`FORMATS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from worker.sources.csv_file import CsvParser
from worker.sources.jsonl import jsonl_parser
from worker.sources.lines import LineParser, parse_lines
from worker.sources.records import (
    Defaults,
    InputIsADirectory,
    InputNotFound,
    InputUnreadable,
    Record,
    UnknownInputFormat,
)
from worker.sources.txt import txt_parser

# Extension -> a parser for one file (a fresh one per file: the CSV parser keeps its header).
FORMATS: dict[str, Callable[[Defaults], LineParser]] = {
    ".txt": txt_parser,
    ".csv": CsvParser,
    ".jsonl": jsonl_parser,
    ".ndjson": jsonl_parser,
}


def claims_file(path: str) -> bool:
    """The last kind asked: whatever no other kind claims is taken for a file (and refused by
    :func:`check_file` when it is not one)."""
    return True


def check_file(path: str) -> None:
    """Raise the :class:`~worker.sources.records.InputError` for ``path`` if it can't be read
    as an input file: missing, a directory, unreadable (it is opened to find out), or of an
    unknown format."""
    target = Path(path)
    if not target.exists():
        raise InputNotFound(path, "input file not found; check the path")
    if target.is_dir():
        raise InputIsADirectory(
            path,
            "is a directory; reading whole folders is not supported yet: pass its files "
            f"(e.g. {path.rstrip('/')}/*.txt)",
        )
    if not target.is_file():
        raise InputIsADirectory(path, "is not a regular file; pass a .txt, .csv or .jsonl file")
    if _format_of(path) is None:
        raise UnknownInputFormat(
            path,
            "unknown input format; use a .txt, .csv, .jsonl or .ndjson file, "
            "or - for standard input",
        )
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        raise InputUnreadable(
            path, "cannot be read (permission denied); check its owner and mode"
        ) from None
    except OSError as exc:
        raise InputUnreadable(path, f"cannot be read ({exc.strerror or exc})") from None


def read_file(path: str, defaults: Defaults, stdin: IO[bytes] | None) -> Iterator[Record]:
    """The records of one checked file; its rejections carry its resolved absolute path, so
    two ``urls.txt`` from different folders keep their own rejected rows."""
    make_parser = FORMATS[Path(path).suffix.lower()]  # check_file refused any other
    with open(path, "rb") as fh:
        yield from parse_lines(path, str(Path(path).resolve()), fh, make_parser(defaults))


def _format_of(path: str) -> Callable[[Defaults], LineParser] | None:
    return FORMATS.get(Path(path).suffix.lower())
