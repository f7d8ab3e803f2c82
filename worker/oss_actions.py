"""What ``imgmod act`` and ``imgmod restore`` do to one OSS object, through the official SDK.

Each function is one OSS request on a client from :func:`worker.oss.make_client` (same
credentials, ``IMGMOD_OSS_ENDPOINT``, path-style on an IP endpoint), retried on transient
faults (5xx, 429, a reset connection, a timeout) with backoff, and otherwise turned into one
error class per situation: the object is gone (404), the AccessKey may not do it (403), or
something else. The caller records the error against that one object and goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import alibabacloud_oss_v2 as oss

from worker.oss import listing_delay

ATTEMPTS = 4  # per request: 0.5 + 1 + 2 s of backoff before giving up
T = TypeVar("T")


class ObjectActionError(Exception):
    """One object could not be changed; the message names the object and what to do."""


class ObjectGone(ObjectActionError):
    """The object (or its bucket) does not exist any more (404)."""


class ObjectDenied(ObjectActionError):
    """The AccessKey may not make this change (403): a RAM permission is missing."""


class ObjectActionFailed(ObjectActionError):
    """OSS refused for another reason, or stayed unavailable through the retries."""


PERMISSIONS = {
    "GetObjectAcl": "oss:GetObjectAcl",
    "PutObjectAcl": "oss:PutObjectAcl",
    "CopyObject": "oss:GetObject and oss:PutObject",
    "DeleteObject": "oss:DeleteObject",
    "HeadObject": "oss:GetObject",
}


def classify(exc: Exception, operation: str, where: str) -> ObjectActionError | None:
    """The error for a failed request on ``where`` (``oss://bucket/key``), None when transient."""
    error = exc.unwrap() if isinstance(exc, oss.exceptions.OperationError) else exc
    if isinstance(error, oss.exceptions.ServiceError):
        status, code = int(error.status_code or 0), error.code or "error"
        if status >= 500 or status == 429:
            return None
        if status == 403:
            return ObjectDenied(
                f"{where}: {operation} refused ({status} {code}): the AccessKey needs "
                f"{PERMISSIONS.get(operation, operation)} on it; grant it in RAM and run the "
                "command again"
            )
        if status == 404:
            return ObjectGone(f"{where}: {operation}: no such object or bucket ({code})")
        return ObjectActionFailed(f"{where}: {operation} refused ({status} {code})")
    if isinstance(error, oss.exceptions.CredentialsBaseError):
        return ObjectActionFailed(f"{where}: no usable credentials for OSS")
    return None


def _request(
    operation: str,
    where: str,
    call: Callable[[], T],
    sleep: Callable[[float], None],
    attempts: int = ATTEMPTS,
) -> T:
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            error = classify(exc, operation, where)
            if error is not None:
                raise error from None
            if attempt == attempts:
                raise ObjectActionFailed(
                    f"{where}: {operation}: OSS stayed unavailable through {attempts} attempts; "
                    "run the same command again to continue"
                ) from None
            sleep(listing_delay(attempt))
    raise AssertionError("unreachable")  # pragma: no cover


def get_acl(
    client: oss.Client, bucket: str, key: str, sleep: Callable[[float], None] = time.sleep
) -> str:
    """The object's ACL: ``default`` (the bucket's), ``private``, ``public-read``, ..."""
    request = oss.GetObjectAclRequest(bucket=bucket, key=key)
    result = _request(
        "GetObjectAcl", _where(bucket, key), lambda: client.get_object_acl(request), sleep
    )
    return str(result.acl or "default")


def set_acl(
    client: oss.Client,
    bucket: str,
    key: str,
    acl: str,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    request = oss.PutObjectAclRequest(bucket=bucket, key=key, acl=acl)
    _request("PutObjectAcl", _where(bucket, key), lambda: client.put_object_acl(request), sleep)


def copy(
    client: oss.Client,
    bucket: str,
    source_key: str,
    key: str,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Copy ``source_key`` to ``key`` in the same bucket (server side: no bytes through us)."""
    request = oss.CopyObjectRequest(
        bucket=bucket, key=key, source_bucket=bucket, source_key=source_key
    )
    _request("CopyObject", _where(bucket, source_key), lambda: client.copy_object(request), sleep)


def delete(
    client: oss.Client, bucket: str, key: str, sleep: Callable[[float], None] = time.sleep
) -> None:
    """Delete ``key``; OSS answers 204 when it is already gone, so this is idempotent."""
    request = oss.DeleteObjectRequest(bucket=bucket, key=key)
    _request("DeleteObject", _where(bucket, key), lambda: client.delete_object(request), sleep)


def exists(
    client: oss.Client, bucket: str, key: str, sleep: Callable[[float], None] = time.sleep
) -> bool:
    request = oss.HeadObjectRequest(bucket=bucket, key=key)
    try:
        _request("HeadObject", _where(bucket, key), lambda: client.head_object(request), sleep)
    except ObjectGone:
        return False
    return True


def _where(bucket: str, key: str) -> str:
    return f"oss://{bucket}/{key}"
