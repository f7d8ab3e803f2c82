"""What a reader yields, and the checks every kind of input shares.

A reader turns each line it reads into an :class:`Accepted` (a validated :class:`ImageRef`) or a
:class:`Rejected` naming the line and the API field at fault; an input that cannot be read at
all is an :class:`InputError`, raised before any line is read. Every format ends in
:func:`validate`, so a reference means the same thing whichever file it came from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from worker.params import ImageRef, InvalidParameter, validate_ref

RAW_LIMIT = 2000  # characters of a rejected line kept for the report

# Accepted column / key names (lower-cased) -> validate_ref keyword.
FIELDS: dict[str, str] = {
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
KNOWN_KEYS = "url, imageUrl, ossBucketName, ossObjectName, ossRegionId, dataId, referer"


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
class Defaults:
    """Values for rows that do not carry their own (the region only for OSS rows)."""

    oss_region: str | None
    referer: str | None


def storable(source: str, number: int, text: str, values: dict[str, str]) -> Rejected | None:
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


def validate(
    source: str, number: int, text: str, values: dict[str, str], defaults: Defaults
) -> Record:
    """``values`` (validate_ref keywords) plus the defaults -> Accepted, or Rejected naming the
    API field at fault."""
    bad = storable(source, number, text, values)
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
