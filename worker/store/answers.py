"""Billed answers: stored once in SQL, and parked in Redis until they are.

:func:`record_results` inserts a message's answers into ``results`` with ``ON CONFLICT
(item_id, service) DO NOTHING`` (:func:`record_result`: one answer): however many workers
finish the same image, one results row is stored, and a billed answer is kept whoever holds
the row's lease. A message's answers cost a few statements, not a few per answer: each
statement is a round trip and SQLAlchemy's execution overhead, which on PostgreSQL was most of
a worker's SQL CPU (bench/RESULTS.md, issue 12).

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
from sqlalchemy.engine import Connection, Engine

from worker.results import ModerationResponse
from worker.store.engine import write
from worker.store.schema import UTCDateTime, items, result_labels, results
from worker.store.sql import clip, insert_values, now

KEY_PREFIX = "imgmod:answer:"
# Long enough to outlive a weekend database outage followed by a worker crash; short enough
# that an answer nobody came back for (its row was deleted, its job dropped) goes away.
ANSWER_TTL_S = 7 * 24 * 3600
FORMAT = 1

_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


# --------------------------------------------------------------------------- in SQL


@functools.cache
def _result_statements() -> tuple[Any, Any]:
    """The Core statements of :func:`record_results`, built once: building a Core statement
    (coercion, cache key) costs more than running it on SQLite, and this is the hot path.
    ``(jobs_of_items, mark_done)``; the IN lists are expanding parameters (``item_ids``,
    ``done_ids``). The INSERTs are driver SQL (:func:`~worker.store.sql.insert_values`)."""
    jobs_of_items = sa.select(items.c.id, items.c.job_id).where(
        items.c.id.in_(sa.bindparam("item_ids", expanding=True))
    )
    mark_done = (
        sa.update(items)
        .where(items.c.id.in_(sa.bindparam("done_ids", expanding=True)))
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
    return jobs_of_items, mark_done


RESULT_COLUMNS = (
    "item_id",
    "job_id",
    "service",
    "request_id",
    "code",
    "msg",
    "data_id",
    "risk_level",
    "ext",
    "raw",
    "moderated_at",
)
# The multi-row INSERT's answer names each row it stored by its key: the rows may come back
# in any order, and an answer already stored (by anyone) comes back not at all.
RESULT_STORED = "ON CONFLICT (item_id, service) DO NOTHING RETURNING id, item_id, service"
LABEL_COLUMNS = (
    "result_id",
    "job_id",
    "item_id",
    "label",
    "confidence",
    "description",
    "risk_level",
)


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
    return record_results(engine, [BilledAnswer(item_id, job_id, service, response)])[0]


def record_results(engine: Engine, answers: Sequence[BilledAnswer]) -> list[bool]:
    """:func:`record_result` of each answer, in one transaction (one commit, one write lock on
    SQLite, for a message's answers): all are stored, or none (the caller then stores them
    one by one, to tell which one the database refuses). True for each answer stored, False
    for one already stored (by anyone, or earlier in ``answers``: the first one counts).

    A few statements per message, not per answer (each is a round trip and SQLAlchemy's
    execution overhead, most of a worker's SQL CPU on PostgreSQL): one multi-row INSERT of the
    results, one of all their labels, one UPDATE of the items per distinct (code, message),
    and one look-up of the items whose job the caller did not give. Rows are written in
    (item, service) order, so two transactions storing overlapping answers wait for each
    other rather than deadlock."""
    if not answers:
        return []
    moment = now()
    with write(engine) as conn:
        return _record(conn, answers, moment)


def _record(conn: Connection, answers: Sequence[BilledAnswer], moment: datetime) -> list[bool]:
    jobs_of_items, mark_done = _result_statements()
    job_of = {a.item_id: a.job_id for a in answers if a.job_id is not None}
    unknown = sorted({a.item_id for a in answers} - job_of.keys())
    if unknown:
        job_of.update((i, j) for i, j in conn.execute(jobs_of_items, {"item_ids": unknown}))
        for item_id in unknown:
            if item_id not in job_of:
                raise LookupError(f"item {item_id} does not exist")
    first: dict[tuple[int, str], BilledAnswer] = {}
    for answer in answers:
        first.setdefault((answer.item_id, answer.service), answer)
    rows = {key: _result_row(a, job_of[a.item_id], moment) for key, a in sorted(first.items())}
    stored = {
        (item_id, service): result_id
        for result_id, item_id, service in insert_values(
            conn,
            results,
            RESULT_COLUMNS,
            [tuple(row[name] for name in RESULT_COLUMNS) for row in rows.values()],
            RESULT_STORED,
        )
    }
    labels = [
        tuple(label[name] for name in LABEL_COLUMNS)
        for key, result_id in sorted(stored.items())
        for label in _label_rows(first[key], result_id, rows[key]["job_id"])
    ]
    insert_values(conn, result_labels, LABEL_COLUMNS, labels)
    done: dict[tuple[Any, Any], list[int]] = {}
    for key in sorted(stored):
        done.setdefault((rows[key]["code"], rows[key]["msg"]), []).append(key[0])
    for (code, msg), ids in done.items():
        ids = sorted(set(ids))
        params = {"done_ids": ids, "done_code": code, "done_msg": msg, "moment": moment}
        if conn.execute(mark_done, params).rowcount != len(ids):
            # an item went away (its job dropped): store nothing
            raise LookupError(f"item {_missing(conn, jobs_of_items, ids)} does not exist")
    kept = dict.fromkeys(stored, True)
    return [kept.pop((a.item_id, a.service), False) for a in answers]


def _missing(conn: Connection, jobs_of_items: Any, ids: list[int]) -> str:
    """The first of ``ids`` with no row (for the error; off the hot path)."""
    found = set(conn.execute(jobs_of_items, {"item_ids": ids}).scalars())
    return next((str(i) for i in ids if i not in found), "?")


def _result_row(answer: BilledAnswer, job_id: int, moment: datetime) -> dict[str, Any]:
    """The ``results`` row of an answer, as stored: clipped and :func:`storable` (field by
    field, so each JSON value can take :func:`storable`'s fast path)."""
    response = answer.response
    data = response.data
    return clip(
        results,
        {
            "item_id": answer.item_id,
            "job_id": job_id,
            "service": storable(answer.service),
            "request_id": storable(response.request_id),
            "code": None if response.code is None else storable(str(response.code)),
            "msg": storable(response.msg),
            "data_id": storable(data.data_id) if data else None,
            "risk_level": storable(data.risk_level) if data else None,
            "ext": storable(dict(data.ext.raw)) if data and data.ext is not None else None,
            "raw": storable(dict(response.raw)),
            "moderated_at": moment,
        },
    )


def _label_rows(answer: BilledAnswer, result_id: int, job_id: int) -> list[dict[str, Any]]:
    """The ``result_labels`` rows of a stored answer."""
    data = answer.response.data
    return [
        clip(
            result_labels,
            storable(
                {
                    "result_id": result_id,
                    "job_id": job_id,
                    "item_id": answer.item_id,
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


def storable(value: Any, number: str | None = "name") -> Any:
    """``value`` with what SQL refuses replaced: NUL characters removed from every string
    (keys too) and NaN/Infinity floats replaced by their names ``"NaN"``, ``"Infinity"``,
    ``"-Infinity"`` (JSON has no such numbers; PostgreSQL's ``jsonb`` and ``text`` refuse them
    and NUL), or by None with ``number=None`` (a numeric column). Pure; a copy when anything
    changed. An OCR line may well contain a NUL, a confidence an overflow.

    A container with nothing to replace (nearly every answer) is returned as it is, found so
    by one ``json.dumps`` in C (:func:`_plain`) rather than by walking it in Python: this runs
    on every answer and label a worker stores."""
    if isinstance(value, dict | list) and _plain(value):
        return value
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


def _plain(value: dict[Any, Any] | list[Any]) -> bool:
    """True when :func:`storable` would change nothing in ``value``: JSON renders it with no
    NaN or Infinity (``allow_nan=False`` refuses them, as keys too) and no NUL (rendered
    ``\\u0000``). Anything else JSON cannot render, or a false alarm (a string holding the
    six characters ``\\u0000``), only sends ``value`` down the slow path."""
    try:
        return "\\u0000" not in json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False


# --------------------------------------------------------------------------- parked in Redis


class _Redis(Protocol):
    def set(self, name: str, value: str, ex: int) -> Any: ...
    def get(self, name: str) -> Any: ...
    def mget(self, keys: list[str]) -> Any: ...
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

    def find_many(self, slots: Sequence[AnswerSlot]) -> list[Mapping[str, Any] | None]:
        """:meth:`find` for each slot, in one ``MGET`` (a message's rows, looked up at once)."""
        if not slots:
            return []
        texts = self._redis.mget([slot.key for slot in slots])
        return [None if t is None else decode(s, t) for s, t in zip(slots, texts, strict=True)]

    def clear(self, *slots: AnswerSlot) -> None:
        if slots:
            self._redis.delete(*(slot.key for slot in slots))
