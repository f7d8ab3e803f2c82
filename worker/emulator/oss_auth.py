"""OSS's checks before a request touches a bucket: the V4 signature and STS security tokens.

The official ``alibabacloud-oss-v2`` SDK signs every request with ``OSS4-HMAC-SHA256`` (header
form, ``UNSIGNED-PAYLOAD``). We recompute the signature from the request as received — path,
raw query, ``x-oss-*``/``content-type``/``content-md5`` and any ``AdditionalHeaders`` — so a
client whose secret, region or canonicalisation is wrong is refused here exactly as OSS would
refuse it, instead of passing against a lenient stand-in and failing in production.

Temporary keys issued by ``DescribeUploadToken`` live in :class:`TokenRegistry`; a request with
such a key must carry its ``x-oss-security-token`` and be signed before the token expires.
Secrets never appear in an :class:`OssError` message.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

ALGORITHM = "OSS4-HMAC-SHA256"
CLOCK_SKEW_SECONDS = 15 * 60
_AUTH_RE = re.compile(
    r"^OSS4-HMAC-SHA256\s+Credential=(?P<cred>[^,\s]+)"
    r"(?:\s*,\s*AdditionalHeaders=(?P<extra>[^,\s]*))?"
    r"\s*,\s*Signature=(?P<sig>[0-9a-f]{64})$"
)


@dataclass(frozen=True)
class OssError:
    """A refusal as OSS words it: HTTP status, ``<Code>``, ``<Message>``."""

    status: int
    code: str
    message: str


@dataclass(frozen=True)
class StsKey:
    """A temporary key from DescribeUploadToken; only valid with its token until ``expires``."""

    key_id: str
    secret: str = field(repr=False)
    token: str = field(repr=False)
    bucket: str
    prefix: str
    expires: float


@dataclass(frozen=True)
class Signed:
    """Who signed a request that passed: the key id, and the STS grant when it is temporary."""

    key_id: str
    sts: StsKey | None = None


class TokenRegistry:
    """STS keys issued so far (thread-safe: issued on the API port, checked on the OSS port)."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._keys: dict[str, StsKey] = {}
        self._lock = threading.Lock()

    def issue(self, bucket: str, prefix: str, now: float) -> StsKey:
        key = StsKey(
            key_id="STS." + secrets.token_hex(12),
            secret=secrets.token_urlsafe(24),
            token=secrets.token_urlsafe(96),
            bucket=bucket,
            prefix=prefix,
            expires=float(int(now + self.ttl)),  # whole seconds, as Expiration states it
        )
        with self._lock:
            # drop the expired ones so a long run does not grow without bound
            self._keys = {k: v for k, v in self._keys.items() if v.expires > now}
            self._keys[key.key_id] = key
        return key

    def get(self, key_id: str) -> StsKey | None:
        with self._lock:
            return self._keys.get(key_id)


def parse_oss_date(value: str) -> float | None:
    """Seconds since the epoch for an ``x-oss-date`` like ``20260102T030405Z``."""
    try:
        return float(calendar.timegm(time.strptime(value, "%Y%m%dT%H%M%SZ")))
    except ValueError:
        return None


def canonical_request(
    method: str,
    bucket: str | None,
    key: str | None,
    raw_query: str,
    headers: Mapping[str, str],
    additional: tuple[str, ...],
) -> str:
    """The V4 canonical request, built the way the SDK's ``SignerV4`` builds it.

    ``headers`` have lower-case names; ``raw_query`` is the query string exactly as sent (its
    pairs are sorted, not re-encoded).
    """
    uri = "/"
    if bucket is not None:
        uri += bucket + "/"
    if key is not None:
        uri += key
    pairs = sorted(pair.partition("=")[::2] for pair in raw_query.split("&") if pair)
    query = "&".join(f"{k}={v}" if v else k for k, v in pairs)
    signed = sorted(
        (name, value)
        for name, value in headers.items()
        if name.startswith("x-oss-")
        or name in ("content-type", "content-md5")
        or name in additional
    )
    canonical_headers = "".join(f"{name}:{value}\n" for name, value in signed)
    payload = headers.get("x-oss-content-sha256", "UNSIGNED-PAYLOAD")
    return "\n".join(
        (method, quote(uri, safe="/"), query, canonical_headers, ";".join(additional), payload)
    )


def signature(secret: str, date: str, region: str, product: str, string_to_sign: str) -> str:
    """HMAC chain ``aliyun_v4<secret>`` -> date -> region -> product -> ``aliyun_v4_request``."""
    digest = ("aliyun_v4" + secret).encode()
    for part in (date, region, product, "aliyun_v4_request"):
        digest = hmac.new(digest, part.encode(), hashlib.sha256).digest()
    return hmac.new(digest, string_to_sign.encode(), hashlib.sha256).hexdigest()


def _denied(message: str) -> OssError:
    return OssError(403, "AccessDenied", message)


def _mismatch() -> OssError:
    return OssError(
        403,
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
    )


def authenticate_oss(
    *,
    method: str,
    bucket: str | None,
    key: str | None,
    raw_query: str,
    headers: Mapping[str, str],
    secrets_by_id: Mapping[str, str],
    tokens: TokenRegistry,
    region: str,
    now: float,
) -> Signed | OssError:
    """Check one request's V4 Authorization; the signer, or the first refusal, as OSS words it."""
    value = headers.get("authorization", "")
    if not value:
        return _denied("AccessDenied: anonymous access is forbidden for this operation.")
    match = _AUTH_RE.match(value.strip())
    if match is None:
        return OssError(
            400,
            "InvalidArgument",
            "Authorization header is invalid: expected 'OSS4-HMAC-SHA256 "
            "Credential=<id>/<date>/<region>/oss/aliyun_v4_request,Signature=<hex>'.",
        )
    parts = match["cred"].split("/")
    if len(parts) != 5 or parts[4] != "aliyun_v4_request":
        return OssError(400, "InvalidArgument", "Authorization Credential scope is malformed.")
    key_id, scope_date, scope_region, product = parts[:4]
    sts = tokens.get(key_id)
    secret = sts.secret if sts is not None else secrets_by_id.get(key_id)
    if secret is None:
        return OssError(
            403, "InvalidAccessKeyId", "The OSS Access Key Id you provided does not exist."
        )
    if sts is not None:
        if not hmac.compare_digest(headers.get("x-oss-security-token", ""), sts.token):
            return OssError(
                403, "InvalidSecurityToken", "The security token you provided is invalid."
            )
        if now >= sts.expires:
            return OssError(
                403, "SecurityTokenExpired", "The security token you provided has expired."
            )
    if scope_region != region or product != "oss":
        return OssError(
            400,
            "InvalidArgument",
            f"Invalid signing region in Authorization header: this endpoint serves {region}.",
        )
    date = headers.get("x-oss-date", "")
    signed_at = parse_oss_date(date)
    if signed_at is None or date[:8] != scope_date:
        return _denied("x-oss-date is missing, malformed or not the Credential's date.")
    if abs(now - signed_at) > CLOCK_SKEW_SECONDS:
        return OssError(
            403,
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
        )
    additional = tuple(h for h in (match["extra"] or "").split(";") if h)
    canonical = canonical_request(method, bucket, key, raw_query, headers, additional)
    string_to_sign = "\n".join(
        (
            ALGORITHM,
            date,
            f"{scope_date}/{scope_region}/{product}/aliyun_v4_request",
            hashlib.sha256(canonical.encode()).hexdigest(),
        )
    )
    expected = signature(secret, scope_date, scope_region, product, string_to_sign)
    if not hmac.compare_digest(expected, match["sig"]):
        return _mismatch()
    return Signed(key_id, sts)
