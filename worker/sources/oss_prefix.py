"""The input kind ``oss://BUCKET/PREFIX``: every object under a prefix, listed page by page.

An input path starting ``oss://`` names a prefix (all of the bucket when empty), listed with the
official OSS SDK (:mod:`worker.oss`); each object it keeps becomes one OSS-triple reference
carrying its ETag, size and LastModified. (A ``oss://bucket/key`` *line* inside a .txt file is
still one object: only a command-line input is a prefix.)

Which objects are kept is :func:`decide`, a pure function of the key, size and LastModified:

* by default only the vendor's image formats by extension (:data:`worker.vendor.IMAGE_EXTENSIONS`,
  case-insensitive); ``--include`` globs replace that default (``--include '*'`` keeps keys
  without an extension), ``--exclude`` globs drop what they match. A glob without ``/`` matches
  the key's last segment, one with ``/`` the whole key (``fnmatch``: ``*`` crosses ``/``).
* ``--modified-since`` skips objects last modified before it, without recording them.
* an empty object, or one over the vendor's 20 MB limit, is recorded ``rejected`` with the reason
  and costs no call.

Listing is not done here: the producer lists one page at a time (so workers start on the first
page and the continuation point is saved with the job), calling :func:`page_records` per page.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from typing import IO

from worker.oss import ObjectInfo, Page
from worker.readahead import read_ahead
from worker.sources.records import Accepted, Defaults, InputError, Record, Rejected, validate
from worker.vendor import IMAGE_EXTENSIONS, MAX_IMAGE_BYTES, MAX_OSS_OBJECT_BYTES

SCHEME = "oss://"
_BUCKET = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")


class BadOssPrefix(InputError, ValueError):
    """An ``oss://`` input that names no valid bucket or prefix."""


@dataclass(frozen=True)
class Prefix:
    bucket: str
    prefix: str

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class Filters:
    """Which listed objects become rows. ``include`` empty: the default image extensions."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    modified_since: datetime | None = None

    def fingerprint(self) -> str:
        """A short digest telling listings under other filters apart (empty: the defaults)."""
        if self == Filters():
            return ""
        since = self.modified_since.isoformat() if self.modified_since else ""
        text = "\0".join(("\x01".join(self.include), "\x01".join(self.exclude), since))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ListedObject(Accepted):
    """An accepted OSS object, with what the listing said of it."""

    etag: str
    size: int
    last_modified: datetime | None


@dataclass(frozen=True)
class RejectedObject(Rejected):
    """A listed object that cannot be moderated (empty, too large, an unusable key). Its
    identity is the object's own (key and ETag), not its position in the listing: a resumed or
    repeated listing that numbers it differently records it once."""

    @property
    def identity(self) -> str:
        digest = hashlib.sha256(self.origin.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return f"object:{digest}"


KEEP, SKIP = "keep", "skip"


def parse_prefix(path: str) -> Prefix:
    """``oss://bucket/prefix`` -> :class:`Prefix`; raises :class:`BadOssPrefix` naming the fix."""
    rest = path[len(SCHEME) :]
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.fullmatch(bucket):
        raise BadOssPrefix(
            path,
            "names no valid OSS bucket (3-63 lower-case letters, digits and '-'); "
            "write oss://BUCKET/PREFIX",
        )
    if len(prefix.encode("utf-8", "surrogatepass")) > MAX_OSS_OBJECT_BYTES or "\x00" in prefix:
        raise BadOssPrefix(
            path, f"the prefix is no OSS key prefix (at most {MAX_OSS_OBJECT_BYTES} bytes, no NUL)"
        )
    return Prefix(bucket, prefix)


def decide(obj: ObjectInfo, filters: Filters) -> str:
    """:data:`KEEP`, :data:`SKIP` (not recorded), or the reason to record it ``rejected``."""
    name = obj.key.rsplit("/", 1)[-1]
    if obj.key.endswith("/"):
        return SKIP  # a "folder" placeholder object
    if filters.include:
        if not any(_matches(obj.key, name, pattern) for pattern in filters.include):
            return SKIP
    elif "." not in name or "." + name.rsplit(".", 1)[1].lower() not in IMAGE_EXTENSIONS:
        return SKIP
    if any(_matches(obj.key, name, pattern) for pattern in filters.exclude):
        return SKIP
    since = filters.modified_since
    if since is not None and obj.last_modified is not None and obj.last_modified < since:
        return SKIP
    if obj.size == 0:
        return "the object is empty (0 bytes)"
    if obj.size > MAX_IMAGE_BYTES:
        return (
            f"the object is {obj.size / 1024 / 1024:.1f} MB, over the vendor's "
            f"{MAX_IMAGE_BYTES // 1024 // 1024} MB limit"
        )
    return KEEP


def _matches(key: str, name: str, pattern: str) -> bool:
    return fnmatchcase(key if "/" in pattern else name, pattern)


def page_records(
    prefix: Prefix,
    objects: tuple[ObjectInfo, ...],
    first_line: int,
    filters: Filters,
    defaults: Defaults,
) -> tuple[list[Record], int]:
    """The records of one page (objects numbered from ``first_line``), and how many objects
    were skipped by the filters."""
    records: list[Record] = []
    skipped = 0
    source = str(prefix)
    for number, obj in enumerate(objects, start=first_line):
        verdict = decide(obj, filters)
        if verdict == SKIP:
            skipped += 1
            continue
        origin = f"{SCHEME}{prefix.bucket}/{obj.key}\0{obj.etag}"
        raw = f"{SCHEME}{prefix.bucket}/{obj.key}"
        if verdict != KEEP:
            records.append(RejectedObject(source, number, "ossObjectName", verdict, raw, origin))
            continue
        values = {"oss_bucket": prefix.bucket, "oss_object": obj.key}
        record = validate(source, number, raw, values, defaults)
        if isinstance(record, Rejected):
            records.append(RejectedObject(source, number, record.field, record.reason, raw, origin))
            continue
        records.append(
            ListedObject(record.ref, source, number, obj.etag, obj.size, obj.last_modified)
        )
    return records, skipped


def prefetched(fetch: Callable[[str | None], Page], token: str | None) -> Iterator[Page]:
    """The pages from ``token`` on (``fetch(token)`` is one page), the next one fetched in a
    background thread while the caller records the current one
    (:func:`worker.readahead.read_ahead`).

    Why: a page's request (the OSS round trip, the SDK's XML parsing) and the recording of the
    page before it (SQL) then overlap, the listing's two halves. At most the page being recorded
    and one more are held, so memory stays flat. Resume stays exact: this only reads ahead; the
    caller still saves a page's continuation token after that page's rows are committed. An
    error fetching a page is raised here, after the pages before it were yielded. Closing the
    iterator (the caller failed) lets the thread end after at most the page in flight.
    """

    def pages() -> Iterator[Page]:
        next_token = token
        while True:
            page = fetch(next_token)
            yield page
            if page.next_token is None:
                return
            next_token = page.next_token

    return read_ahead(pages(), name="oss-list-ahead")


def claims_prefix(path: str) -> bool:
    return path.startswith(SCHEME)


def check_prefix(path: str) -> None:
    """Refuse a malformed ``oss://`` input before anything is listed (access is checked by the
    first page: a 403 there is one line naming the bucket and ``oss:ListObjects``)."""
    parse_prefix(path)


def read_prefix(path: str, defaults: Defaults, stdin: IO[bytes] | None) -> Iterator[Record]:
    """Not a plain stream: a prefix needs an OSS client and a saved continuation point, which
    :func:`worker.producer.enqueue_inputs` provides (it lists prefixes page by page)."""
    raise BadOssPrefix(
        path, "an OSS prefix is listed by the producer (imgmod run/enqueue), not read as a file"
    )


__all__ = [
    "KEEP",
    "SKIP",
    "BadOssPrefix",
    "Filters",
    "ListedObject",
    "Prefix",
    "RejectedObject",
    "check_prefix",
    "claims_prefix",
    "decide",
    "page_records",
    "parse_prefix",
    "prefetched",
]
