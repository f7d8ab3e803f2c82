"""Publishing item ids to the broker: a few ids per Celery message, a thousand per round trip.

``send_task`` costs ~250 µs of CPU and one LPUSH round trip per message, which caps a producer
near 3,000 references/s. On Redis (the broker we ship for) the messages are instead built from
one template and pushed with a single ``LPUSH queue m1 m2 ...`` per chunk: ~10 µs each. Every
message is still a complete Celery protocol-2 message in kombu's Redis envelope, byte for byte
the shape ``send_task`` produces (``tests/integration/test_queue.py`` pins that, and that a
worker runs every id of a batch exactly once). Other transports publish one by one.

How many messages to publish, and when, is :mod:`worker.window`'s business; this module also
gives it the two broker facts it needs on Redis (:func:`broker_backlog`, :func:`refill_lock`).
Every broker call here is bounded: the transport's socket timeouts (``IMGMOD_BROKER_TIMEOUT``,
set in :mod:`worker.app`) and a few quick retries, after which :class:`BrokerUnavailable` says
so instead of hanging.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import kombu.exceptions
import redis.exceptions
from celery import Celery

TASK_NAME = "imgmod.moderate"
PUBLISH_BATCH = 1000
# A failed LPUSH is retried twice after a reconnect of at most two quick tries: with the
# transport's timeouts (T = IMGMOD_BROKER_TIMEOUT) a dead broker is reported within ~10 T.
PUBLISH_ATTEMPTS = 3
RECONNECT = {"max_retries": 2, "interval_start": 0.5, "interval_step": 0.5, "interval_max": 1.0}
REFILL_LOCK = "imgmod:window-refill"  # one refiller at a time per broker database
# The body's third element (protocol 2 "embed"): no callbacks, errbacks, chain or chord.
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_TASK_ID, _ARGSREPR, _BODY, _TAG = "@@task-id@@", "@@argsrepr@@", "@@body@@", "@@tag@@"

log = logging.getLogger(__name__)


def publish_ids(
    app: Celery, ids: Sequence[int], batch_size: int = PUBLISH_BATCH, per_message: int = 1
) -> None:
    """Publish ``imgmod.moderate(id, ...)`` messages of ``per_message`` ids each (the last
    may carry fewer), ``batch_size`` messages per round trip.

    A message carries ids only: everything else is read from the rows when the task claims
    them, so a message can be published twice without harm. That is what makes a failed chunk
    safe to push again whole: Redis may or may not have taken it, and a duplicate costs one
    no-op claim.
    """
    if not ids:
        return
    groups = [tuple(ids[i : i + per_message]) for i in range(0, len(ids), max(1, per_message))]
    with _reported(app), app.producer_or_acquire() as producer:
        if producer.connection.transport.driver_type != "redis":
            for group in groups:
                app.send_task(
                    TASK_NAME, args=group, producer=producer, retry=True, retry_policy=RECONNECT
                )
            return
        build = message_builder(app, queue=app.conf.task_default_queue)
        for start in range(0, len(groups), batch_size):
            chunk = groups[start : start + batch_size]
            _push(producer, app.conf.task_default_queue, [build(g) for g in chunk])


class BrokerUnavailable(kombu.exceptions.OperationalError):
    """The broker refused the connection or did not answer within ``IMGMOD_BROKER_TIMEOUT``.

    A kombu ``OperationalError``, so whatever reports broker outages reports this one; the
    message is the reason only (the caller names the broker: ``url``, password masked).
    """

    def __init__(self, reason: str, url: str) -> None:
        super().__init__(reason)
        self.url = url


class BrokerFull(BrokerUnavailable):
    """Redis refused new messages: it is at its ``maxmemory`` (with ``noeviction``, as it must
    be: evicting would drop queued messages). The rows stay ``pending`` for a later refill."""


# What a dead, unreachable or silent broker raises, through kombu or straight from redis-py.
_BROKER_DOWN = (
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
)


@contextmanager
def _reported(app: Celery) -> Iterator[None]:
    """Broker failures inside, whatever their library, leave as :class:`BrokerUnavailable`."""
    try:
        yield
    except BrokerUnavailable:
        raise
    except redis.exceptions.OutOfMemoryError as exc:
        raise BrokerFull(
            f"Redis is at its maxmemory and refuses new messages ({exc}); raise its maxmemory "
            "or lower IMGMOD_QUEUE_WINDOW",
            app.connection_for_write().as_uri(),
        ) from exc
    except _BROKER_DOWN as exc:
        timeout = (app.conf.broker_transport_options or {}).get("socket_timeout")
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if timeout and _timed_out(exc):
            reason += f" (no answer within IMGMOD_BROKER_TIMEOUT={timeout:g}s)"
        url = app.connection_for_write().as_uri()  # password masked
        raise BrokerUnavailable(reason, url) from exc


def _timed_out(exc: BaseException | None) -> bool:
    """Whether a socket timeout is behind ``exc`` (kombu wraps redis-py's errors)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, (redis.exceptions.TimeoutError, TimeoutError)):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def broker_backlog(app: Celery) -> int | None:
    """Messages the Redis broker holds for imgmod: waiting in the queue plus delivered but not
    yet acknowledged (kombu's ``unacked`` hash). None on other transports, which can't say
    cheaply."""
    with _reported(app), app.producer_or_acquire() as producer:
        if producer.connection.transport.driver_type != "redis":
            return None
        channel = producer.channel
        with channel.conn_or_acquire() as client:
            pipe = client.pipeline(transaction=False)
            pipe.llen(app.conf.task_default_queue)
            pipe.hlen(channel.unacked_key)
            waiting, unacked = pipe.execute()
    return int(waiting) + int(unacked)


@contextmanager
def refill_lock(app: Celery, seconds: float) -> Iterator[bool]:
    """Hold the broker's refill lock (Redis ``SET NX PX``) if free: yields whether it is ours.

    Refillers take turns so the window holds however many processes refill; the lock expires
    after ``seconds`` so a refiller that died holding it stops nobody for long.
    """
    with (
        _reported(app),
        app.producer_or_acquire() as producer,
        producer.channel.conn_or_acquire() as client,
    ):
        lock = client.lock(REFILL_LOCK, timeout=seconds, blocking=False)
        held = bool(lock.acquire())
        try:
            yield held
        finally:
            if held:
                # LockError: it expired meanwhile, and is someone else's now or no one's.
                with suppress(redis.exceptions.LockError):
                    lock.release()


def message_builder(app: Celery, queue: str) -> Callable[[int | Sequence[int]], str]:
    """A function ``item id(s) -> message`` (kombu's Redis wire format, JSON text).

    The template is Celery's own protocol-2 headers (``app.amqp.as_task_v2``, so ``origin``,
    ``lang`` and the rest are what ``send_task`` would write) inside kombu's envelope; per
    message only the task id (also root id and correlation id), ``argsrepr``, the base64 body
    and the delivery tag change.
    """
    proto = app.amqp.as_task_v2(
        _TASK_ID,
        TASK_NAME,
        args=(0,),
        kwargs={},
        reply_to=app.thread_oid,
        ignore_result=None,
        argsrepr=_ARGSREPR,
        kwargsrepr="{}",
    )
    headers = dict(proto.headers, root_id=_TASK_ID)
    envelope = {
        "body": _BODY,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            **proto.properties,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": _TAG,
        },
    }
    text = json.dumps(envelope)
    if text.count(_BODY) != 1 or text.count(_TAG) != 1 or text.count(_ARGSREPR) != 1:
        raise RuntimeError("unexpected Celery message template: publish with send_task")
    # Split around the markers once; each message is then one join of ready-made pieces.
    pieces = _split(text, (_TASK_ID, _ARGSREPR, _BODY, _TAG))
    embed = json.dumps(_EMBED)

    def build(item_ids: int | Sequence[int]) -> str:
        task_id = str(uuid.uuid4())
        ids = [int(item_ids)] if isinstance(item_ids, int) else [int(i) for i in item_ids]
        args = ", ".join(map(str, ids))
        body = base64.b64encode(f"[[{args}], {{}}, {embed}]".encode()).decode()
        values = {
            _TASK_ID: task_id,
            _ARGSREPR: f"({args},)" if len(ids) == 1 else f"({args})",  # repr() of the tuple
            _BODY: body,
            _TAG: str(uuid.uuid4()),
        }
        return "".join(values.get(p, p) for p in pieces)

    return build


_ARGSREPR_IDS = re.compile(r'"argsrepr":\s*"\(([\d, ]+)\)"')


def message_item_ids(raw: str | bytes) -> list[int]:
    """The item ids an ``imgmod.moderate`` message carries (kombu's Redis envelope, JSON): from
    its ``argsrepr`` header, else from its body; none for anything else."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    found = _ARGSREPR_IDS.search(text)
    if found:
        return [int(i) for i in found.group(1).split(",") if i.strip()]
    try:
        envelope = json.loads(text)
        if envelope["headers"]["task"] != TASK_NAME:
            return []
        return [int(i) for i in json.loads(base64.b64decode(envelope["body"]))[0]]
    except (ValueError, KeyError, TypeError, IndexError):
        return []


def _split(text: str, markers: Sequence[str]) -> list[str]:
    """``text`` cut into literal pieces and marker pieces, in order."""
    pieces = [text]
    for marker in markers:
        out: list[str] = []
        for piece in pieces:
            if piece in markers:
                out.append(piece)
                continue
            parts = piece.split(marker)
            for index, part in enumerate(parts):
                if index:
                    out.append(marker)
                if part:
                    out.append(part)
        pieces = out
    return pieces


def _push(producer: Any, queue: str, messages: list[str]) -> None:
    """One LPUSH of every message; on a broker error, reconnect and push the chunk again."""
    connection = producer.connection
    recoverable = (*connection.connection_errors, *connection.channel_errors)
    attempt = 0
    while True:
        attempt += 1
        try:
            with producer.channel.conn_or_acquire() as client:
                client.lpush(queue, *messages)
            return
        except recoverable as exc:
            if attempt >= PUBLISH_ATTEMPTS:
                raise
            delay = 0.2 * attempt
            log.warning(
                "publishing %d messages failed (%s: %s); pushing them again in %.1fs",
                len(messages),
                type(exc).__name__,
                exc,
                delay,
            )
            time.sleep(delay)
            connection.ensure_connection(**RECONNECT)
            producer.revive(connection.default_channel)
