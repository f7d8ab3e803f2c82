"""The lost-message rule (worker.orphans.confirm_orphans) and reading an item id back from a
broker message: pure, no services."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

from celery import Celery

from worker.orphans import confirm_orphans, message_item_id
from worker.queue import TASK_NAME, message_builder, message_item_ids

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
GRACE = 30.0


def test_a_row_unseen_for_less_than_the_grace_is_only_suspected() -> None:
    suspects, confirmed = confirm_orphans({}, [(7, T0)], now=100.0, grace=GRACE)
    assert confirmed == [] and suspects == {(7, T0): 100.0}
    suspects, confirmed = confirm_orphans(suspects, [(7, T0)], now=129.9, grace=GRACE)
    assert confirmed == [] and suspects == {(7, T0): 100.0}


def test_a_row_unseen_by_every_look_for_the_grace_is_confirmed_once_then_starts_over() -> None:
    suspects, _ = confirm_orphans({}, [(7, T0), (9, T0)], now=100.0, grace=GRACE)
    suspects, confirmed = confirm_orphans(suspects, [(9, T0), (7, T0)], now=130.0, grace=GRACE)
    assert confirmed == [7, 9]
    # Published again: another whole grace before a second copy.
    suspects, confirmed = confirm_orphans(suspects, [(7, T0)], now=135.0, grace=GRACE)
    assert confirmed == [] and suspects == {(7, T0): 130.0}


def test_a_look_that_sees_the_message_or_a_changed_row_forgets_the_suspicion() -> None:
    suspects, _ = confirm_orphans({}, [(7, T0), (8, T0)], now=100.0, grace=GRACE)
    # 7's message was seen (not in this look's unseen rows); 8 was claimed and queued again.
    later = T0 + timedelta(seconds=12)
    suspects, confirmed = confirm_orphans(suspects, [(8, later)], now=120.0, grace=GRACE)
    assert confirmed == [] and suspects == {(8, later): 120.0}
    suspects, confirmed = confirm_orphans(suspects, [(7, T0), (8, later)], now=131.0, grace=GRACE)
    assert confirmed == [] and set(suspects) == {(7, T0), (8, later)}


def test_the_item_id_is_read_back_from_the_messages_imgmod_publishes() -> None:
    app = Celery("t", broker="memory://")
    build = message_builder(app, queue="imgmod")
    assert message_item_id(build(123456)) == 123456
    assert message_item_id(build(7).encode()) == 7


def test_the_item_id_is_read_from_the_body_when_the_header_is_missing() -> None:
    body = base64.b64encode(json.dumps([[42], {}, {}]).encode()).decode()
    message = json.dumps({"body": body, "headers": {"task": "imgmod.moderate"}})
    assert message_item_id(message) == 42


def test_anything_else_has_no_item_id() -> None:
    body = base64.b64encode(json.dumps([[42], {}, {}]).encode()).decode()
    assert message_item_id(json.dumps({"body": body, "headers": {"task": "other"}})) is None
    assert message_item_id("not json") is None
    assert (
        message_item_id(json.dumps({"body": "!!", "headers": {"task": "imgmod.moderate"}})) is None
    )


def test_every_item_id_of_a_message_of_several_is_read_back() -> None:
    app = Celery("t", broker="memory://")
    build = message_builder(app, queue="imgmod")
    assert message_item_ids(build([5, 6, 70])) == [5, 6, 70]
    assert message_item_ids(build([9])) == [9] and message_item_id(build([5, 6])) == 5
    body = base64.b64encode(json.dumps([[3, 4], {}, {}]).encode()).decode()
    assert message_item_ids(json.dumps({"body": body, "headers": {"task": TASK_NAME}})) == [3, 4]
    assert message_item_ids("not json") == []
