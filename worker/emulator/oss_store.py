"""The objects the emulator's OSS serves: files under ``<oss-root>/<region>/<bucket>/``, and
synthetic buckets of N generated PNGs (``--oss-synthetic BUCKET=N``).

A synthetic bucket exists so a 1,000,000-object listing can be benchmarked without a million
files on disk: its keys (``img/000000000.png`` ...) and bodies are computed, never stored, so
a page costs the same at object 10 as at object 999,990. Both kinds present their keys as a
sorted :class:`~collections.abc.Sequence`, so listing (:func:`list_page`) is one bisect plus a
walk of one page, for either.

Blocking (disk reads): the server calls these in a thread.
"""

from __future__ import annotations

import base64
import bisect
import calendar
import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import crcmod

from worker.emulator.oss_auth import OssError
from worker.emulator.samples import png_bytes

MAX_KEYS = 1000
SYNTHETIC_MODIFIED = float(calendar.timegm((2026, 1, 1, 0, 0, 0, 0, 0, 0)))
_SYNTHETIC_RE = re.compile(r"^img/(\d{9})\.png$")
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str  # quoted upper-case MD5 hex, as OSS sends it for a non-multipart object
    last_modified: float  # seconds since the epoch


@dataclass(frozen=True)
class Page:
    """One ListObjectsV2 answer; ``next_token`` is set only when ``truncated``."""

    contents: tuple[ObjectInfo, ...]
    common_prefixes: tuple[str, ...]
    truncated: bool
    next_token: str | None


def quoted_md5(body: bytes) -> str:
    return '"' + hashlib.md5(body, usedforsecurity=False).hexdigest().upper() + '"'


# OSS's CRC-64/XZ (ECMA-182, reflected), the x-oss-hash-crc64ecma header: the SDK's own
# parameters (alibabacloud_oss_v2.crc), through crcmod, which the SDK already depends on.
crc64ecma = crcmod.mkCrcFun(0x142F0E1EBA9EA3693, initCrc=0, xorOut=0xFFFFFFFFFFFFFFFF, rev=True)


def digest_error(body: bytes, content_md5: str | None, crc64: str | None) -> OssError | None:
    """How OSS refuses a PutObject whose body does not match the digests its headers sent
    (pure): ``Content-MD5`` (base64 of the MD5) and ``x-oss-hash-crc64ecma`` (decimal), each
    checked only when sent; a malformed one is refused like a wrong one (400 InvalidDigest)."""
    if content_md5 is not None:
        try:
            sent = base64.b64decode(content_md5.strip(), validate=True)
        except ValueError:
            sent = b""
        if len(sent) != 16:
            return OssError(400, "InvalidDigest", "The Content-MD5 you specified was invalid.")
        if sent != hashlib.md5(body, usedforsecurity=False).digest():
            return OssError(
                400,
                "InvalidDigest",
                "The Content-MD5 you specified did not match what was received.",
            )
    if crc64 is not None and crc64.strip() != str(crc64ecma(body)):
        return OssError(
            400,
            "InvalidDigest",
            "The x-oss-hash-crc64ecma you specified did not match what was received.",
        )
    return None


def parse_synthetic(value: str) -> tuple[str, int]:
    """``BUCKET=N`` -> (bucket, N); ValueError names what is wrong."""
    bucket, sep, count = value.partition("=")
    if not sep or not BUCKET_RE.match(bucket) or not count.isdigit():
        raise ValueError(f"{value!r}: give BUCKET=N, e.g. synthetic=1000000")
    return bucket, int(count)


def synthetic_key(n: int) -> str:
    return f"img/{n:09d}.png"


class _SyntheticKeys(Sequence[str]):
    def __init__(self, count: int) -> None:
        self._count = count

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        if isinstance(index, slice):
            return [synthetic_key(n) for n in range(self._count)[index]]
        if not -self._count <= index < self._count:
            raise IndexError(index)
        return synthetic_key(index % self._count)


def encode_token(key: str, skip_prefix: bool) -> str:
    """An opaque continuation token: where the last page stopped (a key, or a common prefix)."""
    raw = ("p:" if skip_prefix else "k:") + key
    return base64.urlsafe_b64encode(raw.encode("utf-8", "surrogateescape")).decode("ascii")


def decode_token(token: str) -> tuple[str, bool] | None:
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii")).decode("utf-8", "surrogateescape")
    except (ValueError, UnicodeError):
        return None
    if raw[:2] not in ("k:", "p:"):
        return None
    return raw[2:], raw[:2] == "p:"


class ObjectStore:
    """Every bucket of one region: on disk under ``root/<region>/``, plus the synthetic ones."""

    def __init__(self, root: Path, region: str, synthetic: dict[str, int]) -> None:
        self.root = root
        self.region = region
        self.synthetic = dict(synthetic)
        self._md5_cache: dict[tuple[str, int, int], str] = {}

    def bucket_dir(self, bucket: str) -> Path:
        return self.root / self.region / bucket

    def has_bucket(self, bucket: str) -> bool:
        return bucket in self.synthetic or self.bucket_dir(bucket).is_dir()

    def object_path(self, bucket: str, key: str) -> Path | None:
        """The file for ``key``, or None when the key would leave the bucket's directory."""
        if not key or "\x00" in key:
            return None
        base = self.bucket_dir(bucket).resolve()
        candidate = (base / key).resolve()
        if base not in candidate.parents:
            return None
        return candidate

    def keys(self, bucket: str) -> Sequence[str]:
        if bucket in self.synthetic:
            return _SyntheticKeys(self.synthetic[bucket])
        base = self.bucket_dir(bucket)
        found: list[str] = []
        for folder, dirs, files in os.walk(base):  # symlinks to directories are not followed
            dirs.sort()
            rel = os.path.relpath(folder, base)
            for name in files:
                key = name if rel == "." else f"{rel}/{name}".replace(os.sep, "/")
                found.append(key)
        found.sort()
        return found

    def body(self, bucket: str, key: str) -> bytes | None:
        if bucket in self.synthetic:
            match = _SYNTHETIC_RE.match(key)
            if match is None or int(match[1]) >= self.synthetic[bucket]:
                return None
            return png_bytes(int(match[1]))
        path = self.object_path(bucket, key)
        if path is None or not path.is_file():
            return None
        return path.read_bytes()

    def info(self, bucket: str, key: str) -> ObjectInfo | None:
        if bucket in self.synthetic:
            body = self.body(bucket, key)
            if body is None:
                return None
            return ObjectInfo(key, len(body), quoted_md5(body), SYNTHETIC_MODIFIED)
        path = self.object_path(bucket, key)
        if path is None:
            return None
        try:
            stat = path.stat()
        except OSError:
            return None
        if not path.is_file():
            return None
        cache_key = (str(path), stat.st_mtime_ns, stat.st_size)
        etag = self._md5_cache.get(cache_key)
        if etag is None:
            try:
                etag = quoted_md5(path.read_bytes())
            except OSError:
                return None
            if len(self._md5_cache) > 100_000:
                self._md5_cache.clear()
            self._md5_cache[cache_key] = etag
        return ObjectInfo(key, stat.st_size, etag, stat.st_mtime)

    def put(self, bucket: str, key: str, body: bytes) -> ObjectInfo | None:
        """Store ``body`` (atomically: a reader never sees half a file); None for a bad key."""
        path = self.object_path(bucket, key)
        if path is None or bucket in self.synthetic:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
        partial.write_bytes(body)
        os.replace(partial, path)
        return self.info(bucket, key)

    def list_page(
        self,
        bucket: str,
        prefix: str,
        delimiter: str,
        start_after: str,
        token: tuple[str, bool] | None,
        max_keys: int,
    ) -> Page:
        keys = self.keys(bucket)
        start, skip = start_after, ""
        if token is not None and token[0] >= start:
            start, skip = token[0], (token[0] if token[1] else "")
        first = max(bisect.bisect_right(keys, start), bisect.bisect_left(keys, prefix))
        return _page(self, bucket, _walk(keys, first), prefix, delimiter, skip, max_keys)


def _walk(keys: Sequence[str], first: int) -> Iterator[str]:
    for index in range(first, len(keys)):
        yield keys[index]


def _page(
    store: ObjectStore,
    bucket: str,
    keys: Iterator[str],
    prefix: str,
    delimiter: str,
    skip: str,
    max_keys: int,
) -> Page:
    contents: list[ObjectInfo] = []
    prefixes: list[str] = []
    last, last_is_prefix = "", False
    for key in keys:
        if not key.startswith(prefix):
            break  # sorted: past the prefix's range
        if skip and key.startswith(skip):
            continue
        common = ""
        if delimiter:
            at = key.find(delimiter, len(prefix))
            if at >= 0:
                common = key[: at + len(delimiter)]
        if common and prefixes and prefixes[-1] == common:
            continue
        if len(contents) + len(prefixes) >= max_keys:
            return Page(tuple(contents), tuple(prefixes), True, encode_token(last, last_is_prefix))
        if common:
            prefixes.append(common)
            last, last_is_prefix = common, True
            continue
        info = store.info(bucket, key)
        if info is None:  # vanished since the walk
            continue
        contents.append(info)
        last, last_is_prefix = key, False
    return Page(tuple(contents), tuple(prefixes), False, None)
