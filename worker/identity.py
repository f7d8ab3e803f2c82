"""Which image a reference is, so an image moderated once is never billed again (pure).

Two keys, both stored on the row at enqueue and looked up in batches
(:mod:`worker.store.reuse`):

- The **identity** says "this very object, unchanged": ``(bucket, key, ETag)`` for an OSS object
  whose ETag we know (OSS gives an overwritten object a new ETag), the SHA-256 for a local file,
  the normalised URL for a URL. A URL's content can change behind the same address, so URL
  identities are stored always but only *looked up* with ``--reuse-urls``; an OSS reference read
  from a file, without an ETag, has no identity (its object may have been replaced since).
- The **content key** says "these very bytes", across keys and buckets: the SHA-256 of a local
  file, or an OSS ETag when it is the object's MD5. OSS computes the ETag of a ``PutObject``
  upload as the MD5 of the body (32 hex digits); a multipart upload's ETag is
  ``<md5 of the parts' md5s>-<parts>`` and says nothing about the bytes, so it is never a content
  key. Appendable and KMS-encrypted objects also carry 32-hex ETags that are not MD5s; they are
  unique per object version, so a false match would need two such ETags to collide *and* the
  sizes to agree. The size is part of the key for that reason.

Keys are short digests (``<kind>:<hex>``) so a 1023-byte object name or a 2048-character URL
still fits an indexable column (``identity`` is 255 characters, ``content_key`` 100).

A URL's or an OSS object's identity is the first 24 hex digits (96 bits) of a SHA-256 (migration
0010 cut the stored ones from 64). Why short: a digest lands on a random page of the
``identity`` index, so every batch an enqueue inserts rewrites most of that index's pages, and
the index's size sets the enqueue's speed (SQLite, a million URLs with a worker beside:
21,300-23,100/s with 64 digits, 23,700-25,100/s with 24, and 35 MiB less memory;
bench/RESULTS.md). Why 96 bits are enough: two of n distinct images share a key with probability
below n^2 / 2^97, which for a billion images (n = 10^9) is 10^18 / 1.6 x 10^29 < 10^-11; and a
shared key costs a reused answer only where the service and ``infoType`` also agree. A file's
identity stays its whole SHA-256, the same string as its content key (a folder's enqueue is
bound by reading its files, not by this index).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

# An MD5 in hex, as OSS spells a PutObject ETag (upper case, in double quotes on the wire).
_MD5_ETAG = re.compile(r"[0-9a-fA-F]{32}")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class ImageKeys:
    """What the store keeps on a row to find earlier answers for the same image."""

    identity: str | None
    content_key: str | None


NO_KEYS = ImageKeys(None, None)


DIGEST_HEX = 24  # hex digits of a URL's or an OSS object's identity: 96 bits, see above


def _digest(*parts: str) -> str:
    # NUL cannot occur in a bucket, an object name, an ETag or a URL: an unambiguous join.
    whole = hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()
    return whole[:DIGEST_HEX]


def bare_etag(etag: str) -> str:
    """An ETag without the double quotes OSS puts around it, and without a weak prefix."""
    text = etag.strip()
    if text.startswith("W/"):
        text = text[2:]
    return text.strip('"')


def md5_of_etag(etag: str | None) -> str | None:
    """The object's MD5 (lower-case hex) when ``etag`` is one; None for a multipart ETag
    (``...-3``), an empty or malformed one."""
    if not etag:
        return None
    text = bare_etag(etag)
    return text.lower() if _MD5_ETAG.fullmatch(text) else None


def oss_keys(bucket: str, key: str, etag: str | None, size: int | None) -> ImageKeys:
    """An OSS object's keys: identity from (bucket, key, ETag), content key from an MD5 ETag
    and the size. Without an ETag the object is unknown: no keys at all."""
    if not etag or not bare_etag(etag):
        return NO_KEYS
    identity = "oss:" + _digest(bucket, key, bare_etag(etag))
    md5 = md5_of_etag(etag)
    content = f"md5:{md5}:{size}" if md5 is not None and size is not None and size >= 0 else None
    return ImageKeys(identity, content)


def file_keys(sha256: str) -> ImageKeys:
    """A local file's keys: its SHA-256 is both its identity and its content key."""
    if not _SHA256.fullmatch(sha256):
        raise ValueError("a file's SHA-256 is 64 hex digits")
    digest = sha256.lower()
    return ImageKeys("sha256:" + digest, "sha256:" + digest)


def url_keys(normalised_url: str) -> ImageKeys:
    """A URL's identity: the normalised URL (:func:`worker.urls.normalize_url`'s output, which
    is what a row stores); no content key, the bytes are unknown until the vendor fetches them."""
    return ImageKeys("url:" + _digest(normalised_url), None)


def keys_of(
    *,
    image_url: str | None,
    oss_bucket: str | None,
    oss_object: str | None,
    etag: str | None = None,
    size: int | None = None,
    sha256: str | None = None,
) -> ImageKeys:
    """The keys of one reference, whatever its kind (a local file wins: it is uploaded)."""
    if sha256:
        return file_keys(sha256)
    if image_url:
        return url_keys(image_url)
    if oss_bucket and oss_object:
        return oss_keys(oss_bucket, oss_object, etag, size)
    return NO_KEYS
