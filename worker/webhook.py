"""Webhook events: one signed JSON POST per image, for the images imgmod cannot touch itself.

A URL image belongs to someone else's server, so ``imgmod act --action webhook --url URL``
tells the owner's system what was decided and lets it act. Every POST carries:

* ``X-Imgmod-Timestamp``: Unix seconds when it was signed;
* ``X-Imgmod-Signature``: ``v1=`` and the hex HMAC-SHA256, keyed with ``IMGMOD_WEBHOOK_SECRET``,
  of ``TIMESTAMP.BODY`` (the timestamp, a dot, the raw body bytes). Signing the timestamp with
  the body lets a receiver refuse a replayed old request (check it is recent) as well as a
  forged one; :func:`verify` is the receiver's side;
* ``X-Imgmod-Delivery``: a stable id per (item, decision), for a receiver to deduplicate, since
  a delivery whose answer was lost is sent again.

A 5xx, a 429, a refused or reset connection or a timeout is retried with exponential backoff;
any other answer is final (2xx delivered, else failed). Redirects are not followed. The secret
never reaches a log line, the database, an exception or an event.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from sqlalchemy.engine import Engine

from worker.settings import is_loopback_host
from worker.store.actions import DecidedItem, delivered_ids, record_delivery
from worker.store.events import NewEvent

ATTEMPTS = 5
BACKOFF_BASE, BACKOFF_CAP = 0.5, 8.0
MAX_AGE = 300  # seconds a receiver should accept a timestamp for (what verify() checks)


class WebhookUrlInvalid(ValueError):
    """The --url cannot be posted to; the message names the fix."""


@dataclass(frozen=True)
class Outcome:
    """What became of one delivery: ``delivered`` or ``failed``, after ``attempts`` POSTs."""

    state: str
    attempts: int
    status: int | None
    error: str | None


@dataclass(frozen=True)
class Signer:
    """Signs bodies with the secret (kept out of reprs)."""

    secret: bytes = field(repr=False)

    def headers(self, body: bytes, timestamp: int, delivery_id: str) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "User-Agent": "imgmod-webhook/1",
            "X-Imgmod-Timestamp": str(timestamp),
            "X-Imgmod-Signature": "v1=" + signature(self.secret, timestamp, body),
            "X-Imgmod-Delivery": delivery_id,
        }


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``TIMESTAMP.BODY`` (pure)."""
    return hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(
    secret: bytes, headers: Mapping[str, str], body: bytes, now: float, max_age: float = MAX_AGE
) -> bool:
    """The receiver's check: a signature made with ``secret`` over this body and timestamp,
    and a timestamp no older (or newer) than ``max_age`` seconds. ``headers`` by exact name."""
    try:
        timestamp = int(headers.get("X-Imgmod-Timestamp", ""))
    except ValueError:
        return False
    given = headers.get("X-Imgmod-Signature", "")
    expected = "v1=" + signature(secret, timestamp, body)
    return abs(now - timestamp) <= max_age and hmac.compare_digest(given, expected)


def check_url(url: str, allow_http: bool) -> str:
    """The URL to post to, or :class:`WebhookUrlInvalid` naming what is wrong (pure)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookUrlInvalid(f"--url {url!r} needs http(s):// and a host")
    if parts.username or parts.password:
        raise WebhookUrlInvalid(
            "--url carries user@ or user:password@; remove it (the events are signed with "
            "IMGMOD_WEBHOOK_SECRET)"
        )
    if parts.scheme == "http" and not (allow_http or is_loopback_host(parts.hostname)):
        raise WebhookUrlInvalid(
            f"--url {url!r} is plain http:// to a host off this machine; use https://, or set "
            "IMGMOD_ALLOW_HTTP=1 to accept that"
        )
    return url


def shown_url(url: str) -> str:
    """The URL as recorded and printed: a query string (often a token) is replaced by ``***``,
    so a credential in it never reaches the database, an event or a log line (pure)."""
    parts = urlsplit(url)
    return parts._replace(query="***" if parts.query else "", fragment="").geturl()


def event_body(payload: Mapping[str, Any]) -> bytes:
    """The JSON body: compact, keys sorted, so the same event is the same bytes."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def backoff(attempt: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Seconds to wait after failed attempt ``attempt`` (from 1)."""
    return float(min(cap, base * 2 ** (attempt - 1)))


def deliver(
    session: requests.Session,
    url: str,
    body: bytes,
    signer: Signer,
    delivery_id: str,
    *,
    timeout: tuple[float, float],
    attempts: int = ATTEMPTS,
    base: float = BACKOFF_BASE,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> Outcome:
    """POST ``body`` to ``url`` until it is answered for good (see the module's rules)."""
    status: int | None = None
    error: str | None = None
    for attempt in range(1, attempts + 1):
        headers = signer.headers(body, int(clock()), delivery_id)
        try:
            response = session.post(
                url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            )
            response.close()
            status, error = response.status_code, None
        except requests.RequestException as exc:
            status, error = None, type(exc).__name__
        if status is not None and 200 <= status < 300:
            return Outcome("delivered", attempt, status, None)
        if status is not None and status < 500 and status != 429:
            return Outcome("failed", attempt, status, f"HTTP {status}")
        if attempt < attempts:
            sleep(backoff(attempt, base))
    return Outcome("failed", attempts, status, error or f"HTTP {status}")


@dataclass
class Sent:
    """What a webhook run came to."""

    delivered: int = 0
    unchanged: int = 0  # delivered to this URL by an earlier run: not sent again
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def event_payload(job: str, item: DecidedItem) -> dict[str, Any]:
    """The JSON event for one image (pure): the reference and its latest decision."""
    reference: dict[str, Any] = (
        {"image_url": item.image_url}
        if item.kind == "url"
        else {"oss_bucket": item.bucket, "oss_object": item.key, "oss_region": item.region}
    )
    return {
        "event": "imgmod.decision",
        "delivery": delivery_id(item),
        "job": job,
        "item_id": item.item_id,
        "data_id": item.data_id,
        "reference": reference,
        "decision": item.decision,
        "decision_id": item.decision_id,
        "policy": item.policy_name,
        "policy_version": item.policy_version,
    }


def delivery_id(item: DecidedItem) -> str:
    return f"{item.item_id}-{item.decision_id}"


def send_events(
    engine: Engine,
    pages: Iterable[list[DecidedItem]],
    job: str,
    url: str,
    signer: Signer,
    *,
    actor: str,
    timeout: tuple[float, float],
    pace: Callable[[], None],
    on_error: Callable[[str], None],
    base: float = BACKOFF_BASE,
) -> Sent:
    """One event per item of ``pages`` not yet delivered to ``url`` (for its current decision); each
    delivery recorded in ``webhook_deliveries`` and as an event, under :func:`shown_url`.
    Idempotent: a rerun sends only what was not delivered."""
    sent = Sent()
    shown = shown_url(url)
    session = requests.Session()
    session.trust_env = False  # no proxy or .netrc credentials from the environment
    try:
        for page in pages:
            done = delivered_ids(engine, shown, [i.item_id for i in page])
            for item in page:
                if (item.item_id, item.decision_id) in done:
                    sent.unchanged += 1
                    continue
                pace()
                body = event_body(event_payload(job, item))
                outcome = deliver(
                    session, url, body, signer, delivery_id(item), timeout=timeout, base=base
                )
                event = NewEvent(
                    kind="webhook",
                    what=outcome.state,
                    actor=actor,
                    job_id=item.job_id,
                    item_id=item.item_id,
                    why=f"latest decision {item.decision} (decision #{item.decision_id})",
                    policy_name=item.policy_name,
                    policy_version=item.policy_version,
                    detail={"url": shown, "attempts": outcome.attempts, "status": outcome.status,
                            "error": outcome.error},
                )  # fmt: skip
                record_delivery(
                    engine, item, shown, outcome.state, outcome.attempts, outcome.status,
                    outcome.error, event,
                )  # fmt: skip
                if outcome.state == "delivered":
                    sent.delivered += 1
                else:
                    sent.failed += 1
                    line = f"item {item.item_id}: webhook to {shown} failed: {outcome.error}"
                    sent.errors.append(line)
                    on_error(line)
    finally:
        session.close()
    return sent
