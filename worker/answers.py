"""Parked answers: every billed answer is kept in Redis from the moment it arrives until it is
stored in SQL, so a worker that dies (or a database that is away) cannot cost a second call.

A worker parks the answer before its SQL write (one ``SET`` with an expiry, well under a
millisecond on a local network) and clears it after the write. A later attempt on the same row
(the old worker was killed, or gave up waiting for the database) finds it and stores it instead
of calling again.

A parked answer must only ever satisfy the attempt it was paid for: Redis is often shared (two
deployments on one limiter, the demo's fixed Redis with a fresh SQLite per run, a recreated
database), and item ids repeat across databases. So the key names the job by its
cross-database identity (:attr:`worker.store.ClaimedItem.job_key`), the item and the service,
and the value repeats job, item, service and the reference, which are checked again on the way
out. Entries expire after :data:`ANSWER_TTL_S` whatever happens.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

KEY_PREFIX = "imgmod:answer:"
# Long enough to outlive a weekend database outage followed by a worker crash; short enough
# that an answer nobody came back for (its row was deleted, its job dropped) goes away.
ANSWER_TTL_S = 7 * 24 * 3600
FORMAT = 1


class _Redis(Protocol):
    def set(self, name: str, value: str, ex: int) -> Any: ...
    def get(self, name: str) -> Any: ...
    def delete(self, *names: str) -> Any: ...


@dataclass(frozen=True)
class AnswerSlot:
    """Whose answer this is: one item of one job of one database, for one service, for one
    reference. Built from the claimed row; everything in it is checked on the way out."""

    job_key: str
    job_id: int
    item_id: int
    service: str
    reference: tuple[str | None, ...]

    @property
    def key(self) -> str:
        return f"{KEY_PREFIX}{self.job_key}:{self.item_id}:{self.service}"


def encode(slot: AnswerSlot, raw: Mapping[str, Any]) -> str:
    """The parked value: the raw answer, with the slot it belongs to."""
    return json.dumps(
        {
            "format": FORMAT,
            "job_key": slot.job_key,
            "job_id": slot.job_id,
            "item_id": slot.item_id,
            "service": slot.service,
            "reference": list(slot.reference),
            "raw": dict(raw),
        }
    )


def decode(slot: AnswerSlot, text: str | bytes) -> Mapping[str, Any] | None:
    """The raw answer parked for ``slot``, or None when the value is not one (another format,
    another job, item, service or reference: someone else's answer under a colliding key)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or value.get("format") != FORMAT:
        return None
    mine = (
        value.get("job_key") == slot.job_key
        and value.get("job_id") == slot.job_id
        and value.get("item_id") == slot.item_id
        and value.get("service") == slot.service
        and value.get("reference") == list(slot.reference)
    )
    raw = value.get("raw")
    return raw if mine and isinstance(raw, dict) else None


class ParkedAnswers:
    """The Redis side. Every method raises ``redis.RedisError`` when Redis cannot answer:
    the caller decides what that means (usually: don't call the API without knowing)."""

    def __init__(self, client: _Redis, ttl_seconds: int = ANSWER_TTL_S) -> None:
        self._redis = client
        self._ttl = ttl_seconds

    def park(self, slot: AnswerSlot, raw: Mapping[str, Any]) -> None:
        self._redis.set(slot.key, encode(slot, raw), ex=self._ttl)

    def find(self, slot: AnswerSlot) -> Mapping[str, Any] | None:
        text = self._redis.get(slot.key)
        return None if text is None else decode(slot, text)

    def clear(self, slot: AnswerSlot) -> None:
        self._redis.delete(slot.key)
