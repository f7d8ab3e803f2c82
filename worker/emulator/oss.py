"""The emulator's OSS: a path-style subset of Object Storage Service on its own port.

``GET /{bucket}?list-type=2`` (ListObjectsV2), ``HEAD|GET|PUT /{bucket}/{key}``, answered as
real OSS answers them (XML bodies, quoted MD5 ETags, ``x-oss-request-id``), so imgmod's lister
and uploader run the real ``alibabacloud-oss-v2`` client against it. Objects are the ones
ImageModeration's OSS triples read (``<oss-root>/<region>/<bucket>/<key>``), so an object listed
or uploaded here resolves when it is moderated.

What tests steer at runtime (:class:`OssKnobs`, through ``/__emulator__/config`` on the API
port): buckets whose ``oss:ListObjects`` is denied, and faults for the next N list requests
(HTTP 403, 500, 503, or a reset connection), so a lister's retry and resume can be proven.
"""

from __future__ import annotations

import asyncio
import email.utils
import mimetypes
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any
from urllib.parse import quote, unquote
from xml.sax.saxutils import escape

from aiohttp import web

from worker.emulator.oss_acl import ObjectAcls, is_object_extra, object_extra
from worker.emulator.oss_auth import OssError, Signed, TokenRegistry, authenticate_oss
from worker.emulator.oss_store import (
    BUCKET_RE,
    MAX_KEYS,
    ObjectInfo,
    ObjectStore,
    Page,
    crc64ecma,
    decode_token,
    digest_error,
)
from worker.emulator.serving import abort_connection

MAX_PUT_BYTES = 64 * 1024 * 1024
_XML = "application/xml"
_LIST_FAULTS = {"oss_list_fault_403": 403, "oss_list_fault_500": 500, "oss_list_fault_503": 503}


@dataclass(frozen=True)
class OssKnobs:
    """Runtime OSS behaviour: denied buckets, and counts of faults for the next list requests."""

    oss_deny_list: tuple[str, ...] = ()
    oss_list_fault_403: int = 0
    oss_list_fault_500: int = 0
    oss_list_fault_503: int = 0
    oss_list_fault_reset: int = 0

    def as_dict(self) -> dict[str, Any]:
        result = asdict(self)
        result["oss_deny_list"] = list(self.oss_deny_list)
        return result


OSS_KNOB_NAMES = frozenset(f.name for f in fields(OssKnobs))


def updated_oss_knobs(knobs: OssKnobs, changes: Mapping[str, Any]) -> OssKnobs:
    """A copy of ``knobs`` with ``changes`` applied; ValueError names a bad key or value."""
    clean: dict[str, Any] = {}
    for name, value in changes.items():
        if name not in OSS_KNOB_NAMES:
            raise ValueError(f"unknown OSS knob {name!r}; known: {sorted(OSS_KNOB_NAMES)}")
        if name == "oss_deny_list":
            if not isinstance(value, list) or not all(isinstance(b, str) for b in value):
                raise ValueError("oss_deny_list must be a list of bucket names")
            clean[name] = tuple(value)
        elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} is a count of list requests (an integer >= 0), got {value!r}")
        else:
            clean[name] = value
    return replace(knobs, **clean)


def http_date(seconds: float) -> str:
    return email.utils.formatdate(seconds, usegmt=True)


def iso_date(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(seconds))


def _x(text: str) -> str:
    return escape(text, {'"': "&quot;"})


def error_xml(error: OssError, request_id: str, host: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error>\n'
        f"  <Code>{_x(error.code)}</Code>\n  <Message>{_x(error.message)}</Message>\n"
        f"  <RequestId>{request_id}</RequestId>\n  <HostId>{_x(host)}</HostId>\n</Error>\n"
    ).encode()


def list_xml(bucket: str, query: Mapping[str, str], max_keys: int, page: Page) -> bytes:
    """ListBucketResult as OSS writes it; names are URL-encoded when ``encoding-type=url``."""
    url = query.get("encoding-type") == "url"

    def name(text: str) -> str:
        return quote(text, safe="/") if url else _x(text)

    out = ['<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult>']
    out.append(f"<Name>{_x(bucket)}</Name>")
    out.append(f"<Prefix>{name(query.get('prefix', ''))}</Prefix>")
    if "continuation-token" in query:
        out.append(f"<ContinuationToken>{name(query['continuation-token'])}</ContinuationToken>")
    if "start-after" in query:
        out.append(f"<StartAfter>{name(query['start-after'])}</StartAfter>")
    out.append(f"<MaxKeys>{max_keys}</MaxKeys>")
    out.append(f"<Delimiter>{name(query.get('delimiter', ''))}</Delimiter>")
    if url:
        out.append("<EncodingType>url</EncodingType>")
    out.append(f"<IsTruncated>{'true' if page.truncated else 'false'}</IsTruncated>")
    if page.next_token is not None:
        out.append(f"<NextContinuationToken>{name(page.next_token)}</NextContinuationToken>")
    for obj in page.contents:
        out.append(
            f"<Contents><Key>{name(obj.key)}</Key>"
            f"<LastModified>{iso_date(obj.last_modified)}</LastModified>"
            f"<ETag>{_x(obj.etag)}</ETag><Type>Normal</Type><Size>{obj.size}</Size>"
            "<StorageClass>Standard</StorageClass></Contents>"
        )
    for prefix in page.common_prefixes:
        out.append(f"<CommonPrefixes><Prefix>{name(prefix)}</Prefix></CommonPrefixes>")
    out.append(f"<KeyCount>{len(page.contents) + len(page.common_prefixes)}</KeyCount>")
    out.append("</ListBucketResult>\n")
    return "\n".join(out).encode("utf-8", "surrogateescape")


class OssServer:
    """The OSS endpoint's state and handlers; ``url`` is known once its site is bound."""

    def __init__(
        self,
        store: ObjectStore,
        secrets_by_id: Mapping[str, str],
        tokens: TokenRegistry,
        knobs: OssKnobs,
    ) -> None:
        self.store = store
        self.secrets_by_id = dict(secrets_by_id)
        self.tokens = tokens
        self.knobs = knobs
        self.url = ""
        self.counts: dict[str, int] = {}
        self.acls = ObjectAcls()  # object ACLs (worker.emulator.oss_acl)
        self._runner: web.AppRunner | None = None

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_PUT_BYTES)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def start(self, host: str, port: int) -> str:
        """Bind the OSS site (port 0 picks one); :meth:`banner` is the line that announces it."""
        self._runner = web.AppRunner(self.build_app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=1024)
        await site.start()
        bound = port
        for address in self._runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                bound = int(address[1])
                break
        self.url = f"http://{host}:{bound}"
        return self.url

    def banner(self) -> str:
        return f"emulator oss listening on {self.url}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def _take_list_fault(self) -> int | str | None:
        """Consume one pending list fault: an HTTP status, "reset", or None."""
        knobs = self.knobs
        if knobs.oss_list_fault_reset > 0:
            self.knobs = replace(knobs, oss_list_fault_reset=knobs.oss_list_fault_reset - 1)
            return "reset"
        for name, status in _LIST_FAULTS.items():
            left = int(getattr(knobs, name))
            if left > 0:
                self.knobs = updated_oss_knobs(knobs, {name: left - 1})
                return status
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        request_id = uuid.uuid4().hex[:24].upper()
        host = request.headers.get("Host", "")
        try:
            return await self._handle(request, request_id)
        except _Refusal as refusal:
            self._count(f"error_{refusal.error.code}")
            headers = {"x-oss-request-id": request_id, "Server": "AliyunOSS"}
            body = b"" if request.method == "HEAD" else error_xml(refusal.error, request_id, host)
            return web.Response(
                status=refusal.error.status, body=body, headers=headers, content_type=_XML
            )

    async def _handle(self, request: web.Request, request_id: str) -> web.StreamResponse:
        raw_path, _, raw_query = request.raw_path.partition("?")
        try:
            path = unquote(raw_path, errors="strict")
        except UnicodeDecodeError:
            raise _Refusal(
                400, "InvalidObjectName", "The object name is not valid UTF-8."
            ) from None
        bucket_part, _, key_part = path.lstrip("/").partition("/")
        bucket = bucket_part or None
        key = key_part or None
        headers = {name.lower(): value for name, value in request.headers.items()}
        signed = authenticate_oss(
            method=request.method,
            bucket=bucket,
            key=key,
            raw_query=raw_query,
            headers=headers,
            secrets_by_id=self.secrets_by_id,
            tokens=self.tokens,
            region=self.store.region,
            now=time.time(),
        )
        if isinstance(signed, OssError):
            raise _Refusal(signed.status, signed.code, signed.message)
        if bucket is None:
            raise _Refusal(403, "AccessDenied", "ListBuckets is not emulated; name a bucket.")
        if not BUCKET_RE.match(bucket) or not self.store.has_bucket(bucket):
            raise _Refusal(404, "NoSuchBucket", f"The specified bucket {bucket} does not exist.")
        common = {"x-oss-request-id": request_id, "Server": "AliyunOSS"}
        if key is None:
            if request.method != "GET" or request.query.get("list-type") != "2":
                raise _Refusal(
                    501, "NotImplemented", "The emulator serves only ListObjectsV2 on a bucket."
                )
            return await self._list(request, bucket, signed, common)
        self._check_object_grant(signed, bucket, key, request.method)
        if is_object_extra(request.method, raw_query, headers):  # ACLs, copy, delete: oss_acl
            extra = await object_extra(
                request, store=self.store, acls=self.acls, bucket=bucket, key=key, signed=signed,
                denied=self.knobs.oss_deny_list, common=common, count=self._count,
            )  # fmt: skip
            if isinstance(extra, OssError):
                raise _Refusal(extra.status, extra.code, extra.message)
            return extra
        if request.method in ("GET", "HEAD"):
            return await self._read(request, bucket, key, common)
        if request.method == "PUT":
            return await self._put(request, bucket, key, common)
        raise _Refusal(405, "MethodNotAllowed", f"{request.method} is not emulated on an object.")

    @staticmethod
    def _check_object_grant(signed: Signed, bucket: str, key: str, method: str) -> None:
        """An upload token grants objects under its prefix in its bucket, and nothing else."""
        sts = signed.sts
        if sts is not None and (bucket != sts.bucket or not key.startswith(sts.prefix)):
            raise _Refusal(
                403, "AccessDenied", f"The upload token does not grant {method} on {bucket}/{key}."
            )

    async def _list(
        self, request: web.Request, bucket: str, signed: Signed, common: dict[str, str]
    ) -> web.StreamResponse:
        self._count("list")
        fault = self._take_list_fault()
        if fault == "reset":
            self._count("list_fault_reset")
            return abort_connection(request)
        if isinstance(fault, int):
            self._count(f"list_fault_{fault}")
            if fault == 403:
                raise _Refusal(403, "AccessDenied", "Injected fault: access denied.")
            raise _Refusal(
                fault, "InternalError", "Injected fault: we encountered an internal error."
            )
        if signed.sts is not None or bucket in self.knobs.oss_deny_list:
            raise _Refusal(
                403,
                "AccessDenied",
                f"You have no right to access this bucket: oss:ListObjects is not allowed on "
                f"{bucket} for this AccessKey.",
            )
        query = request.query
        try:
            max_keys = int(query.get("max-keys", "100"))
        except ValueError:
            max_keys = -1
        if not 1 <= max_keys <= MAX_KEYS:
            raise _Refusal(400, "InvalidArgument", f"max-keys must be 1..{MAX_KEYS}.")
        token = None
        if "continuation-token" in query:
            token = decode_token(query["continuation-token"])
            if token is None:
                raise _Refusal(400, "InvalidArgument", "The continuation token is not valid.")
        page = await asyncio.to_thread(
            self.store.list_page,
            bucket,
            query.get("prefix", ""),
            query.get("delimiter", ""),
            query.get("start-after", ""),
            token,
            max_keys,
        )
        body = list_xml(bucket, query, max_keys, page)
        return web.Response(body=body, headers=common, content_type=_XML)

    async def _read(
        self, request: web.Request, bucket: str, key: str, common: dict[str, str]
    ) -> web.StreamResponse:
        head = request.method == "HEAD"
        self._count("head" if head else "get")
        info = await asyncio.to_thread(self.store.info, bucket, key)
        body = (
            None if head or info is None else await asyncio.to_thread(self.store.body, bucket, key)
        )
        if info is None or (not head and body is None):
            raise _Refusal(404, "NoSuchKey", "The specified key does not exist.")
        headers = dict(common, **_object_headers(info))
        if head:
            headers["Content-Length"] = str(info.size)
            return web.Response(headers=headers)
        return web.Response(body=body, headers=headers)

    async def _put(
        self, request: web.Request, bucket: str, key: str, common: dict[str, str]
    ) -> web.StreamResponse:
        self._count("put")
        body = await request.read()
        sent = request.headers
        refused = digest_error(body, sent.get("Content-MD5"), sent.get("x-oss-hash-crc64ecma"))
        if refused is not None:  # checked before anything is stored, as OSS does
            raise _Refusal(refused.status, refused.code, refused.message)
        info = await asyncio.to_thread(self.store.put, bucket, key, body)
        if info is None:
            raise _Refusal(400, "InvalidObjectName", "The object name is not valid here.")
        crc = str(crc64ecma(body))  # OSS answers with it; the SDK checks it against its own
        return web.Response(headers=dict(common, ETag=info.etag, **{"x-oss-hash-crc64ecma": crc}))


def _object_headers(info: ObjectInfo) -> dict[str, str]:
    content_type = mimetypes.guess_type(info.key)[0] or "application/octet-stream"
    return {
        "ETag": info.etag,
        "Last-Modified": http_date(info.last_modified),
        "Content-Type": content_type,
        "x-oss-object-type": "Normal",
        "x-oss-storage-class": "Standard",
    }


class _Refusal(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code)
        self.error = OssError(status, code, message)
