"""Validation of the ``Service`` / ``ServiceParameters`` fields, mapped to the vendor's body codes.

Pure: takes the form fields, returns either a :class:`ModerationRequest` or a
:class:`BodyError` carrying the code the vendor documents (400 empty, 401 invalid, 402 length).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from worker.emulator.answers import INFO_TYPE_EXT, parse_info_types

SERVICES = ("baselineCheck_global", "aigcDetector_global")
MAX_URL_LENGTH = 2048
MAX_DATA_ID_LENGTH = 64
MAX_REFERER_LENGTH = 256
_DATA_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]*$")
_OSS_FIELDS = ("ossBucketName", "ossObjectName", "ossRegionId")


@dataclass(frozen=True)
class BodyError:
    """A service-level refusal: HTTP 200 with this ``Code`` and ``Msg`` and no ``Data``."""

    code: int
    message: str


@dataclass(frozen=True)
class OssObject:
    region: str
    bucket: str
    name: str

    @property
    def key(self) -> str:
        return f"oss://{self.region}/{self.bucket}/{self.name}"


@dataclass(frozen=True)
class ModerationRequest:
    service: str
    image_url: str | None
    oss: OssObject | None
    data_id: str | None
    referer: str | None
    info_types: tuple[str, ...]

    @property
    def image_key(self) -> str:
        """How stats name the image: its URL, or ``oss://region/bucket/object``."""
        if self.oss is not None:
            return self.oss.key
        return self.image_url or ""


def _optional_string(params: Mapping[str, object], name: str) -> str | None | BodyError:
    value = params.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        return BodyError(401, f"Parameter {name} must be a string.")
    return value


def validate_image_url(url: str) -> BodyError | None:
    """The vendor's URL rules: at most 2,048 characters, ASCII only, http(s) with a host."""
    if len(url) > MAX_URL_LENGTH:
        return BodyError(402, f"Parameter imageUrl is longer than {MAX_URL_LENGTH} characters.")
    if not url.isascii():
        return BodyError(401, "Parameter imageUrl must not contain non-ASCII characters.")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return BodyError(401, "Parameter imageUrl must be an http or https URL.")
    return None


def validate_request(fields: Mapping[str, str]) -> ModerationRequest | BodyError:
    """Check the form fields of one ImageModeration call in the vendor's order of concerns."""
    service = fields.get("Service", "")
    if not service:
        return BodyError(400, "Parameter Service is empty.")
    if service not in SERVICES:
        return BodyError(401, f"Parameter Service is invalid; use one of {', '.join(SERVICES)}.")
    raw = fields.get("ServiceParameters", "")
    if not raw:
        return BodyError(400, "Parameter ServiceParameters is empty.")
    try:
        params = json.loads(raw)
    except ValueError:
        return BodyError(401, "Parameter ServiceParameters is not a JSON string.")
    if not isinstance(params, dict):
        return BodyError(401, "Parameter ServiceParameters must be a JSON object.")

    values: dict[str, str | None] = {}
    for name in ("imageUrl", "dataId", "referer", "infoType", *_OSS_FIELDS):
        value = _optional_string(params, name)
        if isinstance(value, BodyError):
            return value
        values[name] = value

    image_url = values["imageUrl"]
    oss_given = [values[name] for name in _OSS_FIELDS]
    if image_url is None and not any(oss_given):
        return BodyError(
            400,
            "Parameter imageUrl is empty (or give ossBucketName, ossObjectName and ossRegionId).",
        )
    if image_url is not None and any(oss_given):
        return BodyError(401, "Give either imageUrl or the OSS triple, not both.")
    oss: OssObject | None = None
    if image_url is None:
        bucket, object_name, region = oss_given
        if not (region and bucket and object_name):
            missing = [n for n, v in zip(_OSS_FIELDS, oss_given, strict=True) if not v]
            return BodyError(400, f"Parameter {', '.join(missing)} is empty.")
        oss = OssObject(region=region, bucket=bucket, name=object_name)
    else:
        url_error = validate_image_url(image_url)
        if url_error is not None:
            return url_error

    data_id = values["dataId"]
    if data_id is not None:
        if len(data_id) > MAX_DATA_ID_LENGTH:
            return BodyError(
                402, f"Parameter dataId is longer than {MAX_DATA_ID_LENGTH} characters."
            )
        if not _DATA_ID_RE.match(data_id):
            return BodyError(401, "Parameter dataId may hold only letters, digits, '_', '-', '.'.")
    referer = values["referer"]
    if referer is not None and len(referer) > MAX_REFERER_LENGTH:
        return BodyError(402, f"Parameter referer is longer than {MAX_REFERER_LENGTH} characters.")
    info_types = parse_info_types(values["infoType"])
    unknown = [value for value in info_types if value not in INFO_TYPE_EXT]
    if unknown:
        return BodyError(
            401,
            f"Parameter infoType has invalid value(s) {', '.join(unknown)}; "
            f"use {', '.join(INFO_TYPE_EXT)}.",
        )
    return ModerationRequest(
        service=service,
        image_url=image_url,
        oss=oss,
        data_id=data_id,
        referer=referer,
        info_types=info_types,
    )
