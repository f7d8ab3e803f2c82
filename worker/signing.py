"""ACS3-HMAC-SHA256 request signing, exactly as Alibaba Cloud's tea-openapi SDK signs.

Pure functions over plain values, shared by the client (to sign) and the emulator (to verify).
The canonical request is::

    METHOD \\n PATH \\n CANONICAL_QUERY \\n CANONICAL_HEADERS \\n SIGNED_HEADERS \\n SHA256(body)

where every header present when signing is signed (lower-cased, values trimmed, sorted), as the
SDK's ``get_canonicalized_headers`` does.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

ALGORITHM = "ACS3-HMAC-SHA256"
ACTION = "ImageModeration"
VERSION = "2022-03-02"

_AUTH_RE = re.compile(
    r"^(?P<alg>[A-Z0-9-]+) Credential=(?P<cred>[^,]*),SignedHeaders=(?P<signed>[^,]*),"
    r"Signature=(?P<sig>[0-9a-f]+)$"
)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def form_body(fields: Mapping[str, str]) -> bytes:
    """Form-encode like the SDK: keys sorted, ``urlencode`` (spaces as ``+``)."""
    return urlencode({k: fields[k] for k in sorted(fields)}).encode("utf-8")


def canonical_query(query: Mapping[str, str]) -> str:
    return "&".join(
        f"{key}={quote(query[key], safe='~')}" for key in sorted(query) if query[key] is not None
    )


def canonical_headers(headers: Mapping[str, str]) -> tuple[str, str]:
    """Return (canonical header block, signed header names) over every header given."""
    grouped: dict[str, list[str]] = {}
    for name, value in headers.items():
        grouped.setdefault(name.lower(), []).append(str(value).strip())
    names = sorted(grouped)
    block = "".join(f"{n}:{','.join(sorted(grouped[n]))}\n" for n in names)
    return block, ";".join(names)


def canonical_request(
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    payload_hash: str,
) -> str:
    block, signed = canonical_headers(headers)
    return f"{method}\n{path or '/'}\n{canonical_query(query)}\n{block}\n{signed}\n{payload_hash}"


def signature(secret: str, canonical: str) -> str:
    string_to_sign = f"{ALGORITHM}\n{sha256_hex(canonical.encode('utf-8'))}"
    return hmac.new(
        secret.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha256
    ).hexdigest()


def authorization(
    key_id: str,
    secret: str,
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    payload_hash: str,
) -> str:
    """The ``Authorization`` header value for a request whose headers are all signed."""
    canonical = canonical_request(method, path, query, headers, payload_hash)
    _, signed = canonical_headers(headers)
    sig = signature(secret, canonical)
    return f"{ALGORITHM} Credential={key_id},SignedHeaders={signed},Signature={sig}"


def new_nonce() -> str:
    """Unique per attempt: the gateway refuses a nonce it has seen within 15 minutes."""
    return uuid.UUID(bytes=secrets.token_bytes(16), version=4).hex


def acs_date(now: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if now is None else now))


@dataclass(frozen=True)
class SignedRequest:
    """Headers and body ready to POST; the body never carries the secret."""

    headers: dict[str, str] = field(repr=False)
    body: bytes = field(repr=False)


def sign_moderation_request(
    *,
    host: str,
    key_id: str,
    secret: str,
    fields: Mapping[str, str],
    security_token: str | None = None,
    nonce: str | None = None,
    date: str | None = None,
    action: str = ACTION,
    version: str = VERSION,
    user_agent: str = "imgmod/0.1",
) -> SignedRequest:
    """Build the signed POST / for one ImageModeration call (RPC style, form body)."""
    body = form_body(fields)
    payload_hash = sha256_hex(body)
    headers = {
        "host": host,
        "x-acs-version": version,
        "x-acs-action": action,
        "user-agent": user_agent,
        "x-acs-date": date or acs_date(),
        "x-acs-signature-nonce": nonce or new_nonce(),
        "accept": "application/json",
        "content-type": "application/x-www-form-urlencoded",
        "x-acs-content-sha256": payload_hash,
    }
    if security_token:
        headers["x-acs-accesskey-id"] = key_id
        headers["x-acs-security-token"] = security_token
    headers["Authorization"] = authorization(key_id, secret, "POST", "/", {}, headers, payload_hash)
    return SignedRequest(headers=headers, body=body)


@dataclass(frozen=True)
class ParsedAuthorization:
    algorithm: str
    key_id: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str) -> ParsedAuthorization | None:
    """Split an ``Authorization`` header; None when it is not ACS3-shaped."""
    match = _AUTH_RE.match(value.strip())
    if match is None:
        return None
    return ParsedAuthorization(
        algorithm=match["alg"],
        key_id=match["cred"],
        signed_headers=tuple(h for h in match["signed"].split(";") if h),
        signature=match["sig"],
    )


def verify_signature(
    parsed: ParsedAuthorization,
    secret: str,
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    body: bytes,
) -> bool:
    """Recompute the signature over the headers the caller said it signed.

    ``headers`` must have lower-case names. The body hash is checked against
    ``x-acs-content-sha256`` too, so a tampered body fails even with a valid signature.
    """
    if parsed.algorithm != ALGORITHM:
        return False
    if "x-acs-content-sha256" in headers and headers["x-acs-content-sha256"] != sha256_hex(body):
        return False
    try:
        chosen = {name: headers[name] for name in parsed.signed_headers}
    except KeyError:
        return False
    expected = signature(secret, canonical_request(method, path, query, chosen, sha256_hex(body)))
    return hmac.compare_digest(expected, parsed.signature)
