"""The emulator's OSS object writes beyond PutObject: object ACLs, CopyObject and DeleteObject.

What ``imgmod act`` and ``imgmod restore`` need, answered as OSS answers them, so the quarantine
flow runs the real ``alibabacloud-oss-v2`` client end to end:

* ``GET /{bucket}/{key}?acl`` (GetObjectAcl): ``<AccessControlPolicy>`` with the object's ACL,
  ``default`` (inherit the bucket's) until one is set.
* ``PUT /{bucket}/{key}?acl`` with ``x-oss-object-acl`` (PutObjectAcl): one of ``default``,
  ``private``, ``public-read``, ``public-read-write``.
* ``PUT /{bucket}/{key}`` with ``x-oss-copy-source: /{bucket}/{url-encoded key}`` (CopyObject):
  the copy gets the ``default`` ACL (or ``x-oss-object-acl``), as in OSS.
* ``DELETE /{bucket}/{key}`` (DeleteObject): 204, also when the key does not exist (as in OSS).

ACLs live in memory for the emulator's lifetime (a restart forgets them; nothing in the tests
restarts it mid-flow). Every request here is signed by the owner's AccessKey (the emulator has
no anonymous reads), so a ``private`` ACL changes no answer of GetObject; an upload token (STS)
grants PutObject only, and is refused here. Synthetic buckets are read-only.
A bucket in ``oss_deny_list`` refuses these writes too (403), so a permission error per object
can be tested.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Collection
from urllib.parse import unquote
from xml.sax.saxutils import escape

from aiohttp import web

from worker.emulator.oss_auth import OssError, Signed
from worker.emulator.oss_store import BUCKET_RE, ObjectStore

ACLS = ("default", "private", "public-read", "public-read-write")
OWNER_ID = "1000000000000000"  # the emulator's one account
_XML = "application/xml"


class ObjectAcls:
    """Object ACLs set so far, per (bucket, key); thread-safe (handlers run store calls in
    threads)."""

    def __init__(self) -> None:
        self._acls: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def get(self, bucket: str, key: str) -> str:
        with self._lock:
            return self._acls.get((bucket, key), "default")

    def set(self, bucket: str, key: str, acl: str) -> None:
        with self._lock:
            if acl == "default":
                self._acls.pop((bucket, key), None)
            else:
                self._acls[(bucket, key)] = acl


def is_object_extra(method: str, raw_query: str, headers: dict[str, str]) -> bool:
    """Whether a request on an object is one this module answers (pure)."""
    if _has_acl_param(raw_query):
        return method in ("GET", "PUT")
    return method == "DELETE" or (method == "PUT" and "x-oss-copy-source" in headers)


def parse_copy_source(value: str) -> tuple[str, str] | None:
    """``/bucket/url-encoded-key`` -> (bucket, key); None when malformed (pure)."""
    path = value.split("?", 1)[0]
    try:
        text = unquote(path, errors="strict")
    except UnicodeDecodeError:
        return None
    bucket, _, key = text.lstrip("/").partition("/")
    if not text.startswith("/") or not BUCKET_RE.match(bucket) or not key:
        return None
    return bucket, key


def acl_xml(acl: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<AccessControlPolicy>'
        f"<Owner><ID>{OWNER_ID}</ID><DisplayName>{OWNER_ID}</DisplayName></Owner>"
        f"<AccessControlList><Grant>{escape(acl)}</Grant></AccessControlList>"
        "</AccessControlPolicy>\n"
    ).encode()


async def object_extra(
    request: web.Request,
    *,
    store: ObjectStore,
    acls: ObjectAcls,
    bucket: str,
    key: str,
    signed: Signed,
    denied: Collection[str],
    common: dict[str, str],
    count: Callable[[str], None],
) -> web.StreamResponse | OssError:
    """Answer a request :func:`is_object_extra` claimed: the response, or the refusal."""
    headers = {name.lower(): value for name, value in request.headers.items()}
    if signed.sts is not None:
        return OssError(403, "AccessDenied", "The upload token grants PutObject only.")
    if request.method == "GET":
        count("get_acl")
        if await asyncio.to_thread(store.info, bucket, key) is None:
            return OssError(404, "NoSuchKey", "The specified key does not exist.")
        return web.Response(body=acl_xml(acls.get(bucket, key)), headers=common, content_type=_XML)
    if bucket in denied:
        return OssError(403, "AccessDenied", f"You have no right to write objects of {bucket}.")
    if bucket in store.synthetic:
        return OssError(403, "AccessDenied", f"The synthetic bucket {bucket} is read-only.")
    if request.method == "DELETE":
        count("delete")
        await asyncio.to_thread(_delete, store, bucket, key)
        acls.set(bucket, key, "default")
        return web.Response(status=204, headers=common)
    acl = headers.get("x-oss-object-acl", "default")
    if acl not in ACLS:
        return OssError(400, "InvalidArgument", f"x-oss-object-acl must be one of {ACLS}.")
    if _has_acl_param(request.raw_path.partition("?")[2]):
        count("put_acl")
        if await asyncio.to_thread(store.info, bucket, key) is None:
            return OssError(404, "NoSuchKey", "The specified key does not exist.")
        acls.set(bucket, key, acl)
        return web.Response(headers=common)
    count("copy")
    return await _copy(store, acls, bucket, key, headers, denied, common, acl)


async def _copy(
    store: ObjectStore,
    acls: ObjectAcls,
    bucket: str,
    key: str,
    headers: dict[str, str],
    denied: Collection[str],
    common: dict[str, str],
    acl: str,
) -> web.StreamResponse | OssError:
    source = parse_copy_source(headers["x-oss-copy-source"])
    if source is None:
        return OssError(400, "InvalidArgument", "x-oss-copy-source is not /bucket/key.")
    src_bucket, src_key = source
    if src_bucket in denied:
        return OssError(403, "AccessDenied", f"You have no right to read objects of {src_bucket}.")
    if not store.has_bucket(src_bucket):
        return OssError(404, "NoSuchBucket", f"The specified bucket {src_bucket} does not exist.")
    body = await asyncio.to_thread(store.body, src_bucket, src_key)
    if body is None:
        return OssError(404, "NoSuchKey", "The specified key does not exist.")
    info = await asyncio.to_thread(store.put, bucket, key, body)
    if info is None:
        return OssError(400, "InvalidObjectName", "The object name is not valid here.")
    acls.set(bucket, key, acl)
    modified = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(info.last_modified))
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<CopyObjectResult>'
        f"<ETag>{escape(info.etag)}</ETag><LastModified>{modified}</LastModified>"
        "</CopyObjectResult>\n"
    ).encode()
    return web.Response(body=xml, headers=dict(common, ETag=info.etag), content_type=_XML)


def _delete(store: ObjectStore, bucket: str, key: str) -> None:
    path = store.object_path(bucket, key)
    if path is not None and path.is_file():
        path.unlink(missing_ok=True)


def _has_acl_param(raw_query: str) -> bool:
    return any(pair.partition("=")[0] == "acl" for pair in raw_query.split("&"))
