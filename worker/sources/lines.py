"""Physical lines of a byte stream -> records, in bounded memory.

A stream is read one physical line at a time, as bytes, each line capped at
:data:`MAX_LINE_BYTES` (the rest of an overlong line is skipped in bounded chunks), so memory
stays flat for a file of millions of lines or one with no newline at all. A line that is not
text (overlong, a NUL byte, invalid UTF-8) is rejected here, naming its 1-based physical line,
before any format sees it; the rest of the stream goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import IO

from worker.sources.records import RAW_LIMIT, Record, Rejected

MAX_LINE_BYTES = 1 << 20  # 1 MiB: no valid reference comes near; anything longer is garbage
_DRAIN_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Stop:
    """Returned by a parser after a fatal header problem: skip the rest of the file."""

    rejected: Rejected


LineParser = Callable[[str, int, str], "Record | Stop | None"]
"""(display source, 1-based line number, decoded text) -> a record, :class:`Stop`, or None for
a line that holds nothing (blank, a comment, a header)."""


@dataclass(frozen=True)
class _Overlong:
    head: bytes


def parse_lines(source: str, origin: str, fh: IO[bytes], parser: LineParser) -> Iterator[Record]:
    """Every record ``parser`` makes of the lines of ``fh``; each rejection carries ``origin``
    (see :attr:`Rejected.identity`)."""
    for number, data in _physical_lines(fh):
        text = _decode(source, number, data)
        if isinstance(text, Rejected):
            yield replace(text, origin=origin)
            continue
        outcome = parser(source, number, text)
        if isinstance(outcome, Stop):
            yield replace(outcome.rejected, origin=origin)
            return
        if isinstance(outcome, Rejected):
            outcome = replace(outcome, origin=origin)
        if outcome is not None:
            yield outcome


def _physical_lines(fh: IO[bytes]) -> Iterator[tuple[int, bytes | _Overlong]]:
    """(1-based line number, content without its terminator), never more than
    :data:`MAX_LINE_BYTES` in memory; an overlong line comes back as :class:`_Overlong`."""
    number = 0
    while True:
        chunk = fh.readline(MAX_LINE_BYTES + 1)
        if not chunk:
            return
        number += 1
        if len(chunk) > MAX_LINE_BYTES and not chunk.endswith(b"\n"):
            head = chunk[: RAW_LIMIT * 4]
            while chunk and not chunk.endswith(b"\n"):
                chunk = fh.readline(_DRAIN_CHUNK)
            yield number, _Overlong(head)
            continue
        if chunk.endswith(b"\n"):
            chunk = chunk[:-1]
            if chunk.endswith(b"\r"):
                chunk = chunk[:-1]
        yield number, chunk


def _raw(data: bytes) -> str:
    """A printable, storable excerpt of a line: no NUL (PostgreSQL text cannot hold one)."""
    text = data[: RAW_LIMIT * 4].decode("utf-8", errors="backslashreplace")
    return text.replace("\x00", "\\x00")[:RAW_LIMIT]


def _decode(source: str, number: int, data: bytes | _Overlong) -> str | Rejected:
    if isinstance(data, _Overlong):
        return Rejected(
            source,
            number,
            "line",
            f"longer than {MAX_LINE_BYTES} bytes; is this a binary file?",
            _raw(data.head),
        )
    if b"\x00" in data:
        return Rejected(
            source, number, "line", "contains a NUL byte; is this a binary file?", _raw(data)
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected(
            source,
            number,
            "line",
            f"is not valid UTF-8 (byte {exc.start + 1}); save the file as UTF-8",
            _raw(data),
        )
    if number == 1:
        text = text.removeprefix("\ufeff")  # a byte-order mark some editors write
    return text
