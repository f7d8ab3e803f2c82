"""Validation of one ImageModeration request: the image reference and its ServiceParameters.

Pure functions over plain values. What the vendor page documents about ``ServiceParameters`` is
checked here, where a reference enters (a producer reading its sources), before a request spends
a token of the account's QPS: exactly one of ``imageUrl`` or the OSS triple, the length limits
(2,048 / 64 / 256), the ``dataId`` alphabet. ``Service`` and ``infoType`` are checked where a job
is opened (:func:`~worker.vendor.validate_service`, :func:`~worker.vendor.validate_info_type`).
A failure raises :class:`~worker.vendor.InvalidParameter`, which names the API's field and the fix.

A call sends what its row holds: the row was written from a checked reference of a checked job,
so building the request (:func:`request_fields`) checks nothing again.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

from worker.urls import normalize_url
from worker.vendor import (
    MAX_DATA_ID_CHARS,
    MAX_OSS_OBJECT_BYTES,
    MAX_REFERER_CHARS,
    OSS_REGIONS,
    InvalidParameter,
)

# InvalidParameter is what every validator here raises: callers catch it from this module.
__all__ = ["ImageRef", "InvalidParameter", "request_fields", "service_parameters", "validate_ref"]

_DATA_ID_RE = re.compile(r"[A-Za-z0-9_.\-]+")
# OSS bucket names: 3-63 lowercase letters, digits and hyphens, no hyphen at either end.
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")


@dataclass(frozen=True)
class ImageRef:
    """One image to moderate: a normalised URL, or an authorised OSS object (never both)."""

    image_url: str | None = None
    oss_bucket: str | None = None
    oss_object: str | None = None
    oss_region: str | None = None
    data_id: str | None = None
    referer: str | None = None
    # A local file (worker.sources.folder): its absolute path and the SHA-256 read at enqueue;
    # the worker uploads it and sends the OSS triple of the upload (worker.uploads).
    local_path: str | None = None
    sha256: str | None = None

    @property
    def kind(self) -> Literal["url", "oss", "file"]:
        if self.local_path:
            return "file"
        return "url" if self.image_url else "oss"

    @property
    def key(self) -> str:
        """Stable identity for deduplication: the normalised URL, ``oss://region/bucket/object``
        or ``file:<absolute path>`` (one row per file, even for byte-identical files)."""
        if self.local_path:
            return f"file:{self.local_path}"
        if self.image_url:
            return self.image_url
        return f"oss://{self.oss_region}/{self.oss_bucket}/{self.oss_object}"


def _present(value: str | None) -> str | None:
    """Treat missing, empty and blank values alike: not given."""
    if value is None or not value.strip():
        return None
    return value


def _validate_bucket(bucket: str) -> str:
    bucket = bucket.strip()
    if not _BUCKET_RE.fullmatch(bucket):
        raise InvalidParameter(
            "ossBucketName",
            f"{bucket!r} is not a valid OSS bucket name; use 3 to 63 lowercase letters, digits "
            "and hyphens, not starting or ending with a hyphen",
        )
    return bucket


def _validate_object(name: str) -> str:
    # Kept as is: the vendor says to pass Chinese characters and spaces unencoded.
    size = len(name.encode("utf-8", errors="surrogatepass"))
    if size > MAX_OSS_OBJECT_BYTES:
        raise InvalidParameter(
            "ossObjectName",
            f"longer than {MAX_OSS_OBJECT_BYTES} bytes in UTF-8 ({size}); OSS cannot hold it",
        )
    if name.startswith(("/", "\\")):
        raise InvalidParameter(
            "ossObjectName", "starts with '/' or '\\'; give the key inside the bucket without it"
        )
    return name


def _validate_region(region: str) -> str:
    region = region.strip()
    if region in OSS_REGIONS:
        return region
    hint = ""
    if region.startswith("oss-") and region[4:] in OSS_REGIONS:
        hint = f" (drop the 'oss-' prefix: {region[4:]})"
    elif region.lower() in OSS_REGIONS:
        hint = f" (region ids are lowercase: {region.lower()})"
    raise InvalidParameter(
        "ossRegionId",
        f"{region!r} is not an Alibaba Cloud region id{hint}; use the bucket's region, "
        "e.g. cn-beijing or ap-southeast-1",
    )


def _validate_data_id(data_id: str) -> str:
    data_id = data_id.strip()
    if len(data_id) > MAX_DATA_ID_CHARS:
        raise InvalidParameter(
            "dataId", f"longer than {MAX_DATA_ID_CHARS} characters ({len(data_id)}); shorten it"
        )
    if not _DATA_ID_RE.fullmatch(data_id):
        raise InvalidParameter(
            "dataId",
            "may only contain letters, digits, underscores (_), hyphens (-) and periods (.)",
        )
    return data_id


def _validate_referer(referer: str) -> str:
    referer = referer.strip()
    if len(referer) > MAX_REFERER_CHARS:
        raise InvalidParameter(
            "referer", f"longer than {MAX_REFERER_CHARS} characters ({len(referer)}); shorten it"
        )
    if any(unicodedata.category(char) == "Cc" for char in referer):
        raise InvalidParameter("referer", "contains a control character; it is sent as a header")
    return referer


def validate_ref(
    *,
    image_url: str | None = None,
    oss_bucket: str | None = None,
    oss_object: str | None = None,
    oss_region: str | None = None,
    data_id: str | None = None,
    referer: str | None = None,
) -> ImageRef:
    """Build a valid :class:`ImageRef` from raw values; empty strings count as not given.

    Exactly one way of passing the image is allowed: ``imageUrl``, or all three OSS fields.
    """
    image_url, data_id, referer = _present(image_url), _present(data_id), _present(referer)
    oss_bucket, oss_region = _present(oss_bucket), _present(oss_region)
    oss_object = oss_object if oss_object else None  # blanks are significant in an object key
    oss_given = [v is not None for v in (oss_bucket, oss_object, oss_region)]
    if image_url is not None and any(oss_given):
        raise InvalidParameter(
            "imageUrl",
            "give either imageUrl or ossBucketName/ossObjectName/ossRegionId, not both",
        )
    if image_url is None and not any(oss_given):
        raise InvalidParameter(
            "imageUrl",
            "missing; give imageUrl, or ossBucketName, ossObjectName and ossRegionId together",
        )
    checked_id = _validate_data_id(data_id) if data_id is not None else None
    checked_referer = _validate_referer(referer) if referer is not None else None
    if image_url is not None:
        return ImageRef(
            image_url=normalize_url(image_url), data_id=checked_id, referer=checked_referer
        )
    for name, given in zip(
        ("ossBucketName", "ossObjectName", "ossRegionId"), oss_given, strict=True
    ):
        if not given:
            raise InvalidParameter(
                name, "missing; an OSS image needs ossBucketName, ossObjectName and ossRegionId"
            )
    assert oss_bucket is not None and oss_object is not None and oss_region is not None
    return ImageRef(
        oss_bucket=_validate_bucket(oss_bucket),
        oss_object=_validate_object(oss_object),
        oss_region=_validate_region(oss_region),
        data_id=checked_id,
        referer=checked_referer,
    )


def service_parameters(ref: ImageRef, info_type: str) -> dict[str, str]:
    """The ServiceParameters object, with the API's own key names; empty optional keys omitted.

    ``info_type`` is sent as given: the job it comes from was checked when it was opened.
    """
    candidates = {
        "imageUrl": ref.image_url,
        "ossBucketName": ref.oss_bucket,
        "ossObjectName": ref.oss_object,
        "ossRegionId": ref.oss_region,
        "dataId": ref.data_id,
        "referer": ref.referer,
        "infoType": info_type,
    }
    return {key: value for key, value in candidates.items() if value}


def request_fields(service: str, ref: ImageRef, info_type: str) -> dict[str, str]:
    """The form fields of one ImageModeration call: ``Service`` and ``ServiceParameters``.

    ``ServiceParameters`` is a compact JSON string; non-ASCII (an OSS object name) stays as is.
    Nothing is checked again here (see the module docstring): this runs once per API call.
    """
    parameters = service_parameters(ref, info_type)
    return {
        "Service": service,
        "ServiceParameters": json.dumps(parameters, ensure_ascii=False, separators=(",", ":")),
    }
