"""Publishing item ids to the broker: one Celery message per item, a thousand per round trip.

``send_task`` costs ~250 µs of CPU and one LPUSH round trip per message, which caps a producer
near 3,000 references/s. On Redis (the broker we ship for) the messages are instead built from
one template and pushed with a single ``LPUSH queue m1 m2 ...`` per chunk: ~10 µs each. Every
message is still a complete Celery protocol-2 message in kombu's Redis envelope, byte for byte
the shape ``send_task`` produces (``tests/integration/test_queue.py`` pins that, and that a
worker runs every id of a batch exactly once). Other transports publish one by one.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from celery import Celery

TASK_NAME = "imgmod.moderate"
PUBLISH_BATCH = 1000
PUBLISH_ATTEMPTS = 4
# The body's third element (protocol 2 "embed"): no callbacks, errbacks, chain or chord.
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_TASK_ID, _ARGSREPR, _BODY, _TAG = "@@task-id@@", "@@argsrepr@@", "@@body@@", "@@tag@@"

log = logging.getLogger(__name__)


def publish_ids(app: Celery, ids: Sequence[int], batch_size: int = PUBLISH_BATCH) -> None:
    """Publish one ``imgmod.moderate(id)`` message per id.

    The message carries the id only: everything else is read from the row when the task
    claims it, so a message can be published twice without harm. That is what makes a failed
    chunk safe to push again whole: Redis may or may not have taken it, and a duplicate costs
    one no-op claim.
    """
    if not ids:
        return
    with app.producer_or_acquire() as producer:
        if producer.connection.transport.driver_type != "redis":
            for item_id in ids:
                app.send_task(TASK_NAME, args=(item_id,), producer=producer, retry=True)
            return
        build = message_builder(app, queue=app.conf.task_default_queue)
        for start in range(0, len(ids), batch_size):
            chunk = ids[start : start + batch_size]
            _push(producer, app.conf.task_default_queue, [build(i) for i in chunk])


def message_builder(app: Celery, queue: str) -> Callable[[int], str]:
    """A function ``item_id -> message`` (kombu's Redis wire format, JSON text).

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

    def build(item_id: int) -> str:
        task_id = str(uuid.uuid4())
        body = base64.b64encode(f"[[{int(item_id)}], {{}}, {embed}]".encode()).decode()
        values = {
            _TASK_ID: task_id,
            _ARGSREPR: f"({int(item_id)},)",
            _BODY: body,
            _TAG: str(uuid.uuid4()),
        }
        return "".join(values.get(p, p) for p in pieces)

    return build


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
            connection.ensure_connection(max_retries=3)
            producer.revive(connection.default_channel)
