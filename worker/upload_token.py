"""``DescribeUploadToken``: temporary STS keys to upload local images to the vendor's bucket.

The vendor's flow for a local image: ``DescribeUploadToken`` (same endpoint and signature as
ImageModeration) returns STS credentials, ``BucketName``, ``FileNamePrefix``, the bucket's
public and internal OSS endpoints and ``Expiration`` (epoch seconds); the file is put under the
prefix, then moderated as an OSS triple. One token serves many uploads until shortly before it
expires (:class:`worker.uploads.TokenCache`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from worker.client import ModerationClient
from worker.errors import Outcome, TransportError, classify, error_for

ACTION = "DescribeUploadToken"


@dataclass(frozen=True)
class UploadToken:
    """One DescribeUploadToken answer. The secret and token never show in a repr."""

    access_key_id: str
    access_key_secret: str = field(repr=False)
    security_token: str = field(repr=False)
    bucket: str
    prefix: str
    internet_endpoint: str
    internal_endpoint: str
    expiration: float  # epoch seconds

    def endpoint(self, vpc: bool) -> str:
        """The OSS endpoint to upload through, with a scheme (the vendor gives none)."""
        chosen = (
            self.internal_endpoint if vpc and self.internal_endpoint else self.internet_endpoint
        )
        return chosen if "://" in chosen else f"https://{chosen}"


def parse_token(data: Any) -> UploadToken:
    """The token in an answer's ``Data``; a :class:`TransportError` when a field is missing."""
    if not isinstance(data, dict):
        raise TransportError("malformed", f"{ACTION}: the answer carries no Data object")
    try:
        return UploadToken(
            access_key_id=str(data["AccessKeyId"]),
            access_key_secret=str(data["AccessKeySecret"]),
            security_token=str(data["SecurityToken"]),
            bucket=str(data["BucketName"]),
            prefix=str(data.get("FileNamePrefix") or ""),
            internet_endpoint=str(data.get("OssInternetEndPoint") or ""),
            internal_endpoint=str(data.get("OssInternalEndPoint") or ""),
            expiration=float(data["Expiration"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise TransportError(
            "malformed", f"{ACTION}: the answer's Data lacks {type(exc).__name__} {exc}"
        ) from None


def describe_upload_token(client: ModerationClient) -> UploadToken:
    """Ask for a token (not billed); a non-200 answer raises its :mod:`worker.errors` class."""
    response = client.send({}, action=ACTION).response
    if classify(response.code, response.http_status) is not Outcome.SUCCESS:
        raise error_for(response.code, response.msg, response.request_id, response.http_status)
    return parse_token(response.raw.get("Data"))
