"""The gateway's checks before the service sees a call: action, version, key, time, signature,
nonce.

Refusals are :class:`GatewayError` values (HTTP 4xx with a string ``Code``), as Alibaba Cloud's
API gateway answers them; none of them is billed. The AccessKey secret appears only inside
:class:`AccessKey` (hidden from repr) and is never put in a message.
"""

from __future__ import annotations

import calendar
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

from worker.signing import ACTION, VERSION, parse_authorization, sha256_hex, verify_signature

CLOCK_SKEW_SECONDS = 15 * 60
NONCE_TTL_SECONDS = 15 * 60
NONCE_CAPACITY = 2_000_000  # a hard bound on memory even under a flood of unique nonces


@dataclass(frozen=True)
class AccessKey:
    """A key the emulator accepts; ``activated=False`` models an account without the service."""

    key_id: str
    secret: str = field(repr=False)
    activated: bool = True


@dataclass(frozen=True)
class GatewayError:
    status: int
    code: str
    message: str


def parse_key_option(value: str) -> AccessKey:
    """Parse ``ID:SECRET`` or ``ID:SECRET:noperm`` (the secret itself may contain colons)."""
    parts = value.split(":")
    activated = True
    if len(parts) >= 3 and parts[-1] == "noperm":
        activated = False
        parts = parts[:-1]
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ValueError("a key must be given as ID:SECRET or ID:SECRET:noperm")
    return AccessKey(key_id=parts[0], secret=":".join(parts[1:]), activated=activated)


def lower_headers(items: list[tuple[str, str]]) -> dict[str, str]:
    """Header names lower-cased; repeated headers joined as the signer canonicalises them."""
    grouped: dict[str, list[str]] = {}
    for name, value in items:
        grouped.setdefault(name.lower(), []).append(value.strip())
    return {name: ",".join(sorted(values)) for name, values in grouped.items()}


def parse_acs_date(value: str) -> float | None:
    """Seconds since the epoch for an ``x-acs-date`` like ``2026-01-02T03:04:05Z``."""
    try:
        return float(calendar.timegm(time.strptime(value, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


def _signature_error(message: str) -> GatewayError:
    return GatewayError(400, "SignatureDoesNotMatch", message)


def authenticate(
    *,
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    body: bytes,
    keys: Mapping[str, AccessKey],
    now: float,
    actions: frozenset[str] = frozenset({ACTION}),
) -> AccessKey | GatewayError:
    """Run every stateless gateway check; return the caller's key or the first refusal.

    ``headers`` must have lower-case names. The nonce is checked afterwards by
    :class:`NonceLedger`, only for calls that passed, so forged calls cannot burn nonces.
    """
    action = headers.get("x-acs-action", "")
    if action not in actions:
        return GatewayError(
            404,
            "InvalidAction.NotFound",
            f"Specified api is not found, please check your url "
            f"and method. (x-acs-action={action or '<missing>'}; this API serves "
            f"{', '.join(sorted(actions))})",
        )
    version = headers.get("x-acs-version", "")
    if version != VERSION:
        return GatewayError(
            404,
            "InvalidVersion",
            f"Specified parameter Version is not valid. "
            f"(x-acs-version={version or '<missing>'}; use {VERSION})",
        )
    parsed = parse_authorization(headers.get("authorization", ""))
    if parsed is None:
        return _signature_error(
            "The Authorization header is missing or not of the form 'ACS3-HMAC-SHA256 "
            "Credential=<id>,SignedHeaders=<h1;h2>,Signature=<hex>'."
        )
    key = keys.get(parsed.key_id)
    if key is None:
        return GatewayError(
            404, "InvalidAccessKeyId.NotFound", "Specified access key is not found."
        )
    sts_key_id = headers.get("x-acs-accesskey-id")
    if sts_key_id is not None and sts_key_id != parsed.key_id:
        return _signature_error("x-acs-accesskey-id does not match the Authorization Credential.")
    date_value = headers.get("x-acs-date", "")
    signed_at = parse_acs_date(date_value)
    if signed_at is None:
        return GatewayError(
            400,
            "InvalidTimeStamp.Format",
            "Specified time stamp (x-acs-date) is missing or not in yyyy-MM-ddTHH:mm:ssZ format.",
        )
    if abs(now - signed_at) > CLOCK_SKEW_SECONDS:
        return GatewayError(
            400,
            "InvalidTimeStamp.Expired",
            f"Specified time stamp or date has expired: {date_value} is more than 15 minutes "
            "from the server's clock. Sync the client clock (NTP).",
        )
    claimed_hash = headers.get("x-acs-content-sha256")
    if claimed_hash is not None and claimed_hash != sha256_hex(body):
        return _signature_error(
            "The x-acs-content-sha256 header does not match the SHA-256 of the request body."
        )
    unsigned = [
        name
        for name in headers
        if (name == "host" or name.startswith("x-acs-")) and name not in parsed.signed_headers
    ]
    if unsigned:
        return _signature_error(f"Header(s) {', '.join(sorted(unsigned))} must be signed.")
    if not verify_signature(parsed, key.secret, method, path, query, headers, body):
        return _signature_error(
            "Specified signature does not match our calculation. Check the AccessKey secret and "
            "that the canonical request covers exactly the headers, query and body sent."
        )
    if not headers.get("x-acs-signature-nonce"):
        return GatewayError(400, "MissingSignatureNonce", "x-acs-signature-nonce is required.")
    return key


class NonceLedger:
    """Nonces seen in the last 15 minutes; memory is bounded by expiry and a hard capacity."""

    def __init__(self, ttl: float = NONCE_TTL_SECONDS, capacity: int = NONCE_CAPACITY) -> None:
        self._ttl = ttl
        self._capacity = capacity
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def claim(self, nonce: str, now: float) -> bool:
        """Record ``nonce``; False if it was already used within the TTL (a replay)."""
        self._expire(now)
        if nonce in self._seen:
            return False
        self._seen[nonce] = now + self._ttl
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return True

    def _expire(self, now: float) -> None:
        # Insertion order is expiry order (the TTL is constant), so stop at the first live one.
        while self._seen:
            nonce, expires = next(iter(self._seen.items()))
            if expires > now:
                return
            del self._seen[nonce]


def nonce_replayed_error() -> GatewayError:
    return GatewayError(
        400,
        "SignatureNonceUsed",
        "Specified signature nonce was used already. Use a new x-acs-signature-nonce per request.",
    )
