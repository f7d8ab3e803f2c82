"""Local images at call time: check the file, upload it with a cached token, call with the triple.

A row read from a folder (:mod:`worker.sources.folder`) carries the file's path and the SHA-256
computed at enqueue. Just before its call the worker reads the file once, checks it is still
there and still those bytes (else the row fails ``vanished`` or ``changed``, naming the file,
and no call is made: moderating other bytes than the ones enqueued would store a verdict for an
image nobody asked about), puts it under the token's ``FileNamePrefix`` as ``<sha256><ext>``
and returns the OSS triple to send. The key is deterministic, so a retried upload overwrites
the same object; a row whose answer is already stored (or parked) never reaches this module.

One upload token serves every thread of the process (:class:`TokenCache`): one thread refreshes
it, under a lock, a quarter of its life (at most 5 minutes) before ``Expiration`` or when OSS
says it expired. Uploads are bounded by their own semaphore (``IMGMOD_UPLOAD_CONCURRENCY``), not
by the call's thread count: 192 threads must not hold 192 files of up to 20 MB in memory. An
upload failure is a transport fault (:class:`~worker.errors.TransportError`): retried with
backoff like one.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import alibabacloud_oss_v2 as oss
from alibabacloud_oss_v2.retry import NopRetryer

from worker.errors import TransportError
from worker.oss import endpoint_options
from worker.params import ImageRef
from worker.upload_token import UploadToken
from worker.vendor import MAX_IMAGE_BYTES

REFRESH_BEFORE_S = 300.0  # refresh a token this long before it expires (less for short ones)
# What OSS answers for a token that expired or is unknown: refresh it and upload once more.
_TOKEN_CODES = frozenset({"SecurityTokenExpired", "InvalidAccessKeyId", "InvalidSecurityToken"})


class LocalFileProblem(Exception):
    """A local file that can no longer be moderated as enqueued; ``code`` is the row's code
    (``vanished``, ``changed``, ``unreadable``) and the message names the file and the fix."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


def read_checked(path: str, sha256: str) -> bytes:
    """The file's bytes if they are still the ones enqueued; else :class:`LocalFileProblem`."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_IMAGE_BYTES + 1)
    except FileNotFoundError:
        raise LocalFileProblem(
            "vanished",
            f"{path}: the file was deleted or moved after it was enqueued; put it back and run "
            "imgmod retry JOB --code vanished, or enqueue its new place",
        ) from None
    except OSError as exc:
        raise LocalFileProblem(
            "unreadable", f"{path}: cannot be read ({exc.strerror or type(exc).__name__})"
        ) from None
    if hashlib.sha256(data).hexdigest() != sha256.lower():
        raise LocalFileProblem(
            "changed",
            f"{path}: the file changed after it was enqueued (its SHA-256 differs); enqueue it "
            "again (a new job) to moderate what it holds now",
        )
    return data


def object_key(prefix: str, sha256: str, path: str) -> str:
    """Where a file goes in the upload bucket: the token's prefix, its SHA-256, its extension."""
    return f"{prefix}{sha256.lower()}{os.path.splitext(path)[1].lower()}"


def refresh_at(token: UploadToken, fetched_at: float) -> float:
    """When to stop using ``token``: :data:`REFRESH_BEFORE_S` before it expires, or a quarter
    of its life before for a short-lived one (pure)."""
    life = max(0.0, token.expiration - fetched_at)
    return token.expiration - min(REFRESH_BEFORE_S, life / 4)


@dataclass(frozen=True)
class _Held:
    token: UploadToken
    client: oss.Client
    refresh_at: float


class TokenCache:
    """The process's upload token and its OSS client; one refresh at a time."""

    def __init__(
        self,
        fetch: Callable[[], UploadToken],
        make_client: Callable[[UploadToken], oss.Client],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fetch = fetch
        self._make_client = make_client
        self._clock = clock
        self._held: _Held | None = None
        self._lock = threading.Lock()
        self.fetched = 0  # tokens asked for (for logs and tests)

    def get(self) -> tuple[UploadToken, oss.Client]:
        held = self._held
        if held is None or self._clock() >= held.refresh_at:
            with self._lock:
                held = self._held
                if held is None or self._clock() >= held.refresh_at:
                    fetched_at = self._clock()
                    token = self._fetch()
                    self.fetched += 1
                    held = _Held(token, self._make_client(token), refresh_at(token, fetched_at))
                    self._held = held
        return held.token, held.client

    def drop(self, token: UploadToken) -> None:
        """Forget ``token`` (OSS said it expired) unless another thread already replaced it."""
        with self._lock:
            if self._held is not None and self._held.token is token:
                self._held = None


def oss_client_for(token: UploadToken, region: str, vpc: bool, allow_http: bool) -> oss.Client:
    """An OSS client signed with the token's STS keys, for the token's bucket endpoint."""
    cfg = oss.config.load_default()
    cfg.credentials_provider = oss.credentials.StaticCredentialsProvider(
        token.access_key_id, token.access_key_secret, token.security_token
    )
    cfg.region = region
    cfg.retryer = NopRetryer()
    for name, value in endpoint_options(token.endpoint(vpc), allow_http).items():
        setattr(cfg, name, value)
    return oss.Client(cfg)


class Uploader:
    """Turns a local-file reference into the OSS triple of its upload."""

    def __init__(self, tokens: TokenCache, region: str, concurrency: int) -> None:
        self.tokens = tokens
        self._region = region
        self._slots = threading.BoundedSemaphore(concurrency)

    def prepare(self, ref: ImageRef) -> ImageRef:
        """Upload ``ref``'s file and return the reference to send; raises
        :class:`LocalFileProblem` (fail the row) or :class:`TransportError` (retry it)."""
        assert ref.local_path is not None and ref.sha256 is not None
        with self._slots:
            data = read_checked(ref.local_path, ref.sha256)
            key, bucket = self._put(data, ref.sha256, ref.local_path)
        return ImageRef(
            oss_bucket=bucket,
            oss_object=key,
            oss_region=self._region,
            data_id=ref.data_id,
            referer=ref.referer,
        )

    def _put(self, data: bytes, sha256: str, path: str) -> tuple[str, str]:
        for attempt in (1, 2):
            token, client = self.tokens.get()
            key = object_key(token.prefix, sha256, path)
            try:
                client.put_object(oss.PutObjectRequest(bucket=token.bucket, key=key, body=data))
                return key, token.bucket
            except Exception as exc:  # noqa: BLE001 - classified below, never shown raw
                error = exc.unwrap() if isinstance(exc, oss.exceptions.OperationError) else exc
                code = getattr(error, "code", None)
                if code in _TOKEN_CODES and attempt == 1:
                    self.tokens.drop(token)
                    continue
                status = getattr(error, "status_code", None)
                what = f"{status} {code}" if status else type(error).__name__
                raise TransportError(
                    "connection", f"upload of {path} to oss://{token.bucket} failed ({what})"
                ) from None
        raise AssertionError("unreachable")  # pragma: no cover
