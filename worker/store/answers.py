"""Billed answers: stored once in SQL, and parked in Redis until they are.

:func:`record_result` inserts into ``results`` with ``ON CONFLICT (item_id, service) DO
NOTHING``: however many workers finish the same image, one results row is stored, and a billed
answer is kept whoever holds the row's lease.

Parked answers: every billed answer is kept in Redis from the moment it arrives until it is
stored in SQL, so a worker that dies (or a database that is away) cannot cost a second call.
A worker parks the answer before its SQL write (one ``SET`` with an expiry, well under a
millisecond on a local network) and clears it after the write. A later attempt on the same row
(the old worker was killed, or gave up waiting for the database) finds it and stores it instead
of calling again.

A parked answer must only ever satisfy the attempt it was paid for: Redis is often shared (two
deployments on one limiter, the demo's fixed Redis with a fresh SQLite per run, a recreated
database), and item ids repeat across databases. So the key names the job by its
cross-database identity (:attr:`worker.store.leases.ClaimedItem.job_key`), the item and the
service, and the value repeats job, item, service and the reference, which are checked again on
the way out. Entries expire after :data:`ANSWER_TTL_S` whatever happens.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from worker.results import ModerationResponse
from worker.store.engine import write
from worker.store.schema import UTCDateTime, items, result_labels, results
from worker.store.sql import clip, now

KEY_PREFIX = "imgmod:answer:"
# Long enough to outlive a weekend database outage followed by a worker crash; short enough
# that an answer nobody came back for (its row was deleted, its job dropped) goes away.
ANSWER_TTL_S = 7 * 24 * 3600
FORMAT = 1

_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


# --------------------------------------------------------------------------- in SQL


@functools.cache
def _result_statements(dialect: str) -> tuple[Any, Any, Any, Any]:
    """The four statements of :func:`record_result`, built once per database kind: building
    a Core statement (coercion, cache key) costs more than running it on SQLite, and this is
    the hot path. ``(job_of_item, insert_result, insert_labels, mark_done)``."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    job_of_item = sa.select(items.c.job_id).where(items.c.id == sa.bindparam("item_id"))
    insert_result = (
        insert(results)
        .on_conflict_do_nothing(index_elements=["item_id", "service"])
        .returning(results.c.id)
    )
    mark_done = (
        sa.update(items)
        .where(items.c.id == sa.bindparam("done_id"))
        .values(
            state="done",
            last_code=sa.bindparam("done_code"),
            last_message=sa.bindparam("done_msg"),
            last_error=None,
            lease_owner=None,
            lease_expires_at=None,
            finished_at=sa.bindparam("moment", type_=UTCDateTime()),
            updated_at=sa.bindparam("moment", type_=UTCDateTime()),
        )
    )
    return job_of_item, insert_result, sa.insert(result_labels), mark_done


@dataclass(frozen=True)
class BilledAnswer:
    """One billed answer to store: the item's id, its job's, and the service it was for."""

    item_id: int
    job_id: int | None
    service: str
    response: ModerationResponse


def record_result(
    engine: Engine,
    item_id: int,
    owner: str,
    service: str,
    response: ModerationResponse,
    job_id: int | None = None,
) -> bool:
    """Store a billed answer and mark the item done; False when one was already stored.

    Kept even if ``owner``'s lease expired or another worker took the item: the call was paid
    for. The unique (item_id, service) key makes a second answer a no-op, labels included.
    ``owner`` is accepted for symmetry and logging by callers; it does not gate the write.
    The answer is made storable first (:func:`storable`: no NUL characters, no NaN or
    Infinity, which PostgreSQL refuses), identically on both databases. An error raised here
    that :func:`~worker.store.engine.is_outage` does not recognise will not go away by retrying.
    ``job_id`` (the claimed row's, when the caller has it) saves a look-up; a missing item
    raises ``LookupError`` either way, and nothing is stored.
    """
    del owner  # a billed answer is never thrown away, whoever holds the lease
    with write(engine) as conn:
        return _record(conn, BilledAnswer(item_id, job_id, service, response), now())


def record_results(engine: Engine, answers: Sequence[BilledAnswer]) -> list[bool]:
    """:func:`record_result` of each answer, in one transaction (one commit, one write lock on
    SQLite, for a message's answers): all are stored, or none (the caller then stores them
    one by one, to tell which one the database refuses)."""
    moment = now()
    with write(engine) as conn:
        return [_record(conn, answer, moment) for answer in answers]


def _record(conn: Connection, answer: BilledAnswer, moment: datetime) -> bool:
    item_id, job_id, service, response = (
        answer.item_id,
        answer.job_id,
        answer.service,
        answer.response,
    )
    data = response.data
    code = None if response.code is None else str(response.code)
    job_of_item, insert_result, insert_labels, mark_done = _result_statements(conn.dialect.name)
    if job_id is None:
        job_id = conn.execute(job_of_item, {"item_id": item_id}).scalar()
        if job_id is None:
            raise LookupError(f"item {item_id} does not exist")
    row = clip(
        results,
        storable(
            {
                "item_id": item_id,
                "job_id": job_id,
                "service": service,
                "request_id": response.request_id,
                "code": code,
                "msg": response.msg,
                "data_id": data.data_id if data else None,
                "risk_level": data.risk_level if data else None,
                "ext": dict(data.ext.raw) if data and data.ext is not None else None,
                "raw": dict(response.raw),
                "moderated_at": moment,
            }
        ),
    )
    result_id = conn.execute(insert_result, row).scalar()
    if result_id is None:
        return False
    labels = [
        clip(
            result_labels,
            storable(
                {
                    "result_id": result_id,
                    "job_id": job_id,
                    "item_id": item_id,
                    "label": label.label,
                    "confidence": label.confidence,
                    "description": label.description,
                    "risk_level": label.risk_level,
                },
                number=None,
            ),
        )
        for label in (data.result if data else ())
    ]
    if labels:
        conn.execute(insert_labels, labels)
    done = conn.execute(
        mark_done,
        {"done_id": item_id, "done_code": row["code"], "done_msg": row["msg"], "moment": moment},
    )
    if done.rowcount != 1:  # the item went away (its job dropped): store nothing
        raise LookupError(f"item {item_id} does not exist")
    return True


def storable(value: Any, number: str | None = "name") -> Any:
    """``value`` with what SQL refuses replaced: NUL characters removed from every string
    (keys too) and NaN/Infinity floats replaced by their names ``"NaN"``, ``"Infinity"``,
    ``"-Infinity"`` (JSON has no such numbers; PostgreSQL's ``jsonb`` and ``text`` refuse them
    and NUL), or by None with ``number=None`` (a numeric column). Pure; a copy when anything
    changed. An OCR line may well contain a NUL, a confidence an overflow."""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, float) and not math.isfinite(value):
        if number is None:
            return None
        return "NaN" if math.isnan(value) else _NON_FINITE[value]
    if isinstance(value, Mapping):
        return {storable(k, number): storable(v, number) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v, number) for v in value]
    return value


# --------------------------------------------------------------------------- parked in Redis


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

    def clear(self, *slots: AnswerSlot) -> None:
        if slots:
            self._redis.delete(*(slot.key for slot in slots))
