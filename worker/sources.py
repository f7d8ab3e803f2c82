"""Input readers: files of image references -> validated :class:`Accepted` / :class:`Rejected`.

Every reader streams: a file is read one physical line at a time, as bytes, each line capped at
:data:`MAX_LINE_BYTES` (the rest of an overlong line is skipped in bounded chunks), so memory stays
flat for a file of millions of lines or one with no newline at all. A bad line (invalid UTF-8, a
NUL byte, bad quoting, a wrong type, an invalid parameter) becomes a :class:`Rejected` naming its
1-based physical line; the rest of the file goes on. Nothing here touches the database.

Formats, chosen by extension (case-insensitive):

``.txt``
    One reference per line: an ``http(s)://`` URL, or ``oss://bucket/object`` (needs
    ``oss_region``). Surrounding whitespace is stripped; blank lines and ``#`` comments skipped.
``.csv``
    Comma-separated, UTF-8, with a header row on line 1 naming the columns: ``url`` (or
    ``image_url`` / ``imageUrl``), ``oss_bucket`` / ``ossBucketName``, ``oss_object`` /
    ``ossObjectName``, ``oss_region`` / ``ossRegionId``, ``data_id`` / ``dataId``, ``referer``
    (case-insensitive). Unknown columns are ignored, and named once in a logged warning, so an
    export with extra columns (size, owner...) can be fed as is. A header without any image
    column, or naming one field twice, makes the file unusable: line 1 is rejected with the
    reason and the file's other lines are skipped. A row with too few or too many cells, or bad
    quoting, is rejected. A quoted cell may not span lines (a newline is never valid in any of
    these fields), so line numbers are always physical lines.
``.jsonl`` / ``.ndjson``
    One JSON object per line with the same keys; values are strings or null. A line that is not
    an object, has an unknown key, a key given twice or a non-string value is rejected. Blank
    lines are skipped.
``-``
    Standard input, sniffed per line: a line starting with ``{`` is read as JSON, any other as
    a ``.txt`` line.

``oss_region`` and ``referer`` are defaults for rows that do not carry their own (the region
only for OSS rows). An input that cannot be read at all (missing, a directory, unreadable, an
unknown extension) raises an :class:`InputError` when :func:`read_inputs` is called, before any
line is read, so a caller can refuse the whole command before it writes anything.

A :class:`Rejected` carries an ``identity`` besides its display ``source``: the resolved absolute
path of its file (or a token of this read, for standard input), its line and a digest of the
line. Two ``urls.txt`` from different folders, or two runs of ``-``, are different inputs and
keep their own rejected rows; reading the same unchanged file again gives the same identities.

Every check of a line is linear in its length: a line of the 1 MiB cap that repeats one key
tens of thousands of times costs what any 1 MiB line costs (``bench/sources.py``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

from worker.params import ImageRef, InvalidParameter, validate_ref

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 1 << 20  # 1 MiB: no valid reference comes near; anything longer is garbage
RAW_LIMIT = 2000  # characters of a rejected line kept for the report
_DRAIN_CHUNK = 64 * 1024

FORMATS = {".txt": "txt", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}

# Accepted column / key names (lower-cased) -> validate_ref keyword.
_FIELDS: dict[str, str] = {
    "url": "image_url",
    "image_url": "image_url",
    "imageurl": "image_url",
    "oss_bucket": "oss_bucket",
    "ossbucketname": "oss_bucket",
    "oss_object": "oss_object",
    "ossobjectname": "oss_object",
    "oss_region": "oss_region",
    "ossregionid": "oss_region",
    "data_id": "data_id",
    "dataid": "data_id",
    "referer": "referer",
}
# validate_ref keyword -> the API's name, used in rejections.
API_NAMES: dict[str, str] = {
    "image_url": "imageUrl",
    "oss_bucket": "ossBucketName",
    "oss_object": "ossObjectName",
    "oss_region": "ossRegionId",
    "data_id": "dataId",
    "referer": "referer",
}
_KNOWN_KEYS = "url, imageUrl, ossBucketName, ossObjectName, ossRegionId, dataId, referer"
_NAMED_AT_MOST = 5  # unknown keys named in a rejection; a garbage line may hold thousands


class InputError(Exception):
    """An input that cannot be read at all; the message names the path and the fix.

    Each situation subclasses the built-in exception it used to be, so callers that catch
    ``FileNotFoundError`` or ``ValueError`` keep working.
    """

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path

    def __str__(self) -> str:
        return str(self.args[0])


class InputNotFound(InputError, FileNotFoundError):
    """The path does not exist."""


class InputIsADirectory(InputError, IsADirectoryError):
    """The path is a directory (or another non-file); folders are not a source yet."""


class InputUnreadable(InputError, PermissionError):
    """The file exists but cannot be opened for reading (permissions, I/O error)."""


class UnknownInputFormat(InputError, ValueError):
    """The extension names no format imgmod reads."""


@dataclass(frozen=True)
class Accepted:
    ref: ImageRef
    source: str
    line: int


@dataclass(frozen=True)
class Rejected:
    """A line that cannot be moderated; ``field`` is the API's name for the culprit, or
    ``line`` / ``csv`` / ``json`` for a line that could not even be read.

    ``origin`` says which input this was beyond its display name: the resolved absolute path,
    or ``stdin:<token of this read>``; empty when built by hand (then ``source`` stands in).
    """

    source: str
    line: int
    field: str
    reason: str
    raw: str
    origin: str = ""

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.field}: {self.reason}"

    @property
    def identity(self) -> str:
        """Which line of which input this is: the same unchanged line of the same file read
        twice has one identity; a line of another file, another stdin run, or an edited line
        has another. A digest, so a 4 KiB path stays a short, indexable key."""
        digest = hashlib.sha256(
            f"{self.origin or self.source}\0{self.line}\0{self.raw}".encode(
                "utf-8", "surrogatepass"
            )
        ).hexdigest()[:32]
        return f"{self.line}:{digest}"


Record = Accepted | Rejected


@dataclass(frozen=True)
class _Stop:
    """Returned by a parser after a fatal header problem: skip the rest of the file."""

    rejected: Rejected


LineParser = Callable[[str, int, str], "Record | _Stop | None"]


@dataclass(frozen=True)
class _Overlong:
    head: bytes


@dataclass(frozen=True)
class _Defaults:
    oss_region: str | None
    referer: str | None


def read_inputs(
    paths: Sequence[str],
    *,
    oss_region: str | None = None,
    referer: str | None = None,
    stdin: IO[bytes] | None = None,
) -> Iterator[Record]:
    """Stream every reference of ``paths`` in order.

    Checks every path up front and raises an :class:`InputError` for the first one that cannot
    be read at all (see :func:`check_input`), before any line is read.
    """
    for path in paths:
        check_input(path)
    return _read_all(list(paths), _Defaults(oss_region, referer), stdin)


def check_input(path: str) -> None:
    """Raise the :class:`InputError` for ``path`` if it can't be read as an input: missing,
    a directory, unreadable (it is opened to find out), or of an unknown format."""
    if path == "-":
        return
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


def _format_of(path: str) -> str | None:
    return FORMATS.get(Path(path).suffix.lower())


def _read_all(paths: list[str], defaults: _Defaults, stdin: IO[bytes] | None) -> Iterator[Record]:
    for path in paths:
        if path == "-":
            origin = f"stdin:{uuid.uuid4().hex}"  # each read of stdin is a new input
            yield from _parse(path, origin, stdin or sys.stdin.buffer, _stdin_parser(defaults))
            continue
        fmt = _format_of(path)
        parser = _CsvParser(defaults) if fmt == "csv" else _line_parser(fmt, defaults)
        with open(path, "rb") as fh:
            yield from _parse(path, str(Path(path).resolve()), fh, parser)


def _parse(source: str, origin: str, fh: IO[bytes], parser: LineParser) -> Iterator[Record]:
    for number, data in _physical_lines(fh):
        text = _decode(source, number, data)
        if isinstance(text, Rejected):
            yield replace(text, origin=origin)
            continue
        outcome = parser(source, number, text)
        if isinstance(outcome, _Stop):
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


def _storable(source: str, number: int, text: str, values: dict[str, str]) -> Rejected | None:
    """Refuse values the database cannot store: NUL characters, unpaired surrogates (JSON can
    spell both as escapes)."""
    for name, value in values.items():
        if "\x00" in value:
            reason = "contains a NUL character"
        else:
            try:
                value.encode("utf-8")
                continue
            except UnicodeEncodeError:
                reason = "contains an unpaired UTF-16 surrogate; it is not valid text"
        return Rejected(source, number, API_NAMES[name], reason, text[:RAW_LIMIT])
    return None


def _validate(
    source: str, number: int, text: str, values: dict[str, str], defaults: _Defaults
) -> Record:
    """``values`` (validate_ref keywords) plus the defaults -> Accepted, or Rejected naming the
    API field at fault."""
    bad = _storable(source, number, text, values)
    if bad is not None:
        return bad
    kwargs: dict[str, str | None] = dict(values)
    if not kwargs.get("referer"):
        kwargs["referer"] = defaults.referer
    is_oss = bool(kwargs.get("oss_bucket") or kwargs.get("oss_object"))
    if is_oss and not kwargs.get("oss_region"):
        kwargs["oss_region"] = defaults.oss_region
    try:
        ref = validate_ref(**kwargs)
    except InvalidParameter as exc:
        return Rejected(source, number, exc.field, exc.reason, text[:RAW_LIMIT])
    return Accepted(ref, source, number)


def _txt_line(source: str, number: int, text: str, defaults: _Defaults) -> Record | None:
    line = text.strip()
    if not line or line.startswith("#"):
        return None
    if line[:6].lower() != "oss://":
        return _validate(source, number, text, {"image_url": line}, defaults)
    bucket, sep, key = line[6:].partition("/")
    if not bucket or not sep or not key:
        return Rejected(
            source,
            number,
            "ossObjectName",
            "an OSS line is oss://bucket/object, with both parts",
            text[:RAW_LIMIT],
        )
    if not defaults.oss_region:
        return Rejected(
            source,
            number,
            "ossRegionId",
            "oss://bucket/object lines need the bucket's region; pass --oss-region",
            text[:RAW_LIMIT],
        )
    return _validate(source, number, text, {"oss_bucket": bucket, "oss_object": key}, defaults)


class _JsonObject(dict[str, object]):
    """A decoded JSON object that remembers the keys it was given more than once."""

    repeated: tuple[str, ...] = ()


def _json_object(pairs: list[tuple[str, object]]) -> _JsonObject:
    # json.loads would silently keep the last of two equal keys: which URL did the user mean?
    # One counting pass: a line repeating a key 60,000 times must not cost 60,000² steps.
    obj = _JsonObject(pairs)
    if len(obj) != len(pairs):
        counts = Counter(key for key, _ in pairs)
        obj.repeated = tuple(key for key in obj if counts[key] > 1)
    return obj


def _json_line(source: str, number: int, text: str, defaults: _Defaults) -> Record | None:
    if not text.strip():
        return None
    try:
        obj = json.loads(text, object_pairs_hook=_json_object)
    except (ValueError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        return Rejected(source, number, "json", f"not valid JSON: {reason}", text[:RAW_LIMIT])
    if not isinstance(obj, dict):
        return Rejected(
            source,
            number,
            "json",
            f"a line must be a JSON object, not {_json_kind(obj)}",
            text[:RAW_LIMIT],
        )
    if isinstance(obj, _JsonObject) and obj.repeated:
        return Rejected(
            source, number, "json", f"gives the key {obj.repeated[0]!r} twice", text[:RAW_LIMIT]
        )
    values: dict[str, str] = {}
    unknown: list[str] = []
    for key, value in obj.items():
        name = _FIELDS.get(key.strip().lower())
        if name is None:
            unknown.append(key)
            continue
        if name in values:
            return Rejected(
                source, number, "json", f"gives {API_NAMES[name]} twice", text[:RAW_LIMIT]
            )
        if value is None:
            continue
        if not isinstance(value, str):
            kind = "a boolean" if isinstance(value, bool) else f"a JSON {_json_kind(value)}"
            return Rejected(
                source,
                number,
                API_NAMES[name],
                f"must be a string, not {kind}",
                text[:RAW_LIMIT],
            )
        values[name] = value
    if unknown:
        names = ", ".join(repr(k) for k in unknown[:_NAMED_AT_MOST])
        if len(unknown) > _NAMED_AT_MOST:
            names += f" and {len(unknown) - _NAMED_AT_MOST} more"
        return Rejected(
            source,
            number,
            "json",
            f"unknown key(s) {names}; use {_KNOWN_KEYS}",
            text[:RAW_LIMIT],
        )
    return _validate(source, number, text, values, defaults)


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    return "dict" if isinstance(value, dict) else type(value).__name__


def _line_parser(fmt: str | None, defaults: _Defaults) -> LineParser:
    handler = _json_line if fmt == "jsonl" else _txt_line

    def parse(source: str, number: int, text: str) -> Record | None:
        return handler(source, number, text, defaults)

    return parse


def _stdin_parser(defaults: _Defaults) -> LineParser:
    def parse(source: str, number: int, text: str) -> Record | None:
        handler = _json_line if text.lstrip().startswith("{") else _txt_line
        return handler(source, number, text, defaults)

    return parse


class _CsvParser:
    """Line 1 is the header; each later line is one record (see the module docstring)."""

    def __init__(self, defaults: _Defaults) -> None:
        self.defaults = defaults
        self.columns: list[str | None] | None = None  # field per column; None: ignored

    def __call__(self, source: str, number: int, text: str) -> Record | _Stop | None:
        if self.columns is None:
            return self._header(source, number, text)
        if not text.strip():
            return None
        cells = self._cells(source, number, text)
        if isinstance(cells, Rejected):
            return cells
        if len(cells) != len(self.columns):
            return Rejected(
                source,
                number,
                "csv",
                f"has {len(cells)} cells but the header has {len(self.columns)} columns",
                text[:RAW_LIMIT],
            )
        values = {
            name: cell for name, cell in zip(self.columns, cells, strict=True) if name and cell
        }
        return _validate(source, number, text, values, self.defaults)

    @staticmethod
    def _cells(source: str, number: int, text: str) -> list[str] | Rejected:
        try:
            return next(csv.reader([text], strict=True))
        except csv.Error as exc:
            reason = (
                "a quoted cell is not closed on this line (cells may not span lines)"
                if "unexpected end of data" in str(exc)
                else f"bad quoting: {exc}"
            )
            return Rejected(source, number, "csv", reason, text[:RAW_LIMIT])

    def _header(self, source: str, number: int, text: str) -> _Stop | None:
        def fatal(reason: str) -> _Stop:
            return _Stop(
                Rejected(
                    source,
                    number,
                    "csv",
                    f"{reason}; the rest of the file was skipped",
                    text[:RAW_LIMIT],
                )
            )

        cells = self._cells(source, number, text)
        if isinstance(cells, Rejected):
            return fatal(f"header: {cells.reason}")
        columns = [_FIELDS.get(cell.strip().lower()) for cell in cells]
        counts = Counter(c for c in columns if c)
        twice = sorted(API_NAMES[c] for c, n in counts.items() if n > 1)
        if twice:
            return fatal(f"the header names {', '.join(twice)} more than once")
        if not {"image_url", "oss_bucket", "oss_object"} & set(counts):
            return fatal(
                "line 1 must be a header naming the columns (url, or ossBucketName, "
                f"ossObjectName, ossRegionId; optional dataId, referer), found {cells[:5]!r}; "
                "for a bare list of URLs use a .txt file"
            )
        ignored = [cell for cell, c in zip(cells, columns, strict=True) if c is None]
        if ignored:
            log.warning("%s: ignoring unknown CSV column(s) %s", source, ", ".join(ignored))
        self.columns = columns
        return None
