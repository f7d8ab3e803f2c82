"""A policy file as text: parsing the TOML, and finding the line of each key for messages.

TOML parsers say where a syntax error is, but not on which line a value stood; a message about
``rules[3].min_confidence`` must still name its line. :func:`locate_keys` scans the text for
table headers and ``key =`` lines (the shapes a policy file uses: top-level keys, ``[[rules]]``
tables, ``[table]`` headers), which is all a message needs. Pure.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML with the backport
    import tomli as tomllib

_HEADER = re.compile(r"\s*(\[\[?)\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"\s*(\"[^\"]*\"|'[^']*'|[A-Za-z0-9_\-]+)\s*=")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'')
_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")


class PolicyError(ValueError):
    """A policy file that cannot be used: names the file, the line and the field, and what to
    write instead. Raised before anything is decided or written."""

    def __init__(self, source: str, line: int | None, field: str | None, message: str):
        self.source, self.line, self.field, self.message = source, line, field, message
        where = f"{source}, line {line}" if line else source
        super().__init__(f"{where}: {message}")


def load_toml(text: str, source: str) -> dict[str, Any]:
    """The TOML document, or a :class:`PolicyError` with the parser's line."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = _AT.search(message)
        line = int(found.group(1)) if found else None
        reason = _AT.sub("", message) if found else message
        if found:
            reason += f" (column {found.group(2)})"
        raise PolicyError(source, line, None, f"not valid TOML: {reason}") from None


def _unquote(key: str) -> str:
    return key[1:-1] if key[:1] in "\"'" and key[-1:] == key[:1] else key


def locate_keys(text: str) -> Mapping[tuple[str | int, ...], int]:
    """Line numbers (1-based) of keys by path: ``("name",)``, ``("rules", 0)`` (the header of
    the first ``[[rules]]``), ``("rules", 0, "decision")``. The first occurrence wins; lines
    inside a multi-line string or array are skipped roughly (by bracket and quote balance)."""
    lines: dict[tuple[str | int, ...], int] = {}
    table: tuple[str | int, ...] = ()
    arrays: dict[str, int] = {}
    depth = 0  # open brackets of a multi-line array
    in_string: str | None = None  # the delimiter of an open multi-line string
    for number, line in enumerate(text.splitlines(), start=1):
        if in_string:
            if in_string in line:
                in_string = None
            continue
        if depth == 0:
            header = _HEADER.match(line)
            if header:
                name = _unquote(header.group(2).strip())
                if header.group(1) == "[[":
                    arrays[name] = arrays.get(name, -1) + 1
                    table = (name, arrays[name])
                else:
                    table = (name,)
                lines.setdefault(table, number)
                continue
            key = _KEY.match(line)
            if key:
                lines.setdefault((*table, _unquote(key.group(1))), number)
        for quote in ('"""', "'''"):
            if line.count(quote) % 2 == 1:
                in_string = quote
        if not in_string:
            body = _STRING.sub("", line).split("#", 1)[0]
            depth = max(0, depth + body.count("[") - body.count("]"))
    return lines
