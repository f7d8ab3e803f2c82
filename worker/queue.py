"""Publishing item ids to the broker: one message per item, many messages per connection."""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery

TASK_NAME = "imgmod.moderate"


def publish_ids(app: Celery, ids: Sequence[int]) -> None:
    """Publish one ``imgmod.moderate(id)`` message per id over a single pooled connection.

    The message carries the id only: everything else is read from the row when the task
    claims it, so a message can be published twice without harm.
    """
    if not ids:
        return
    with app.producer_or_acquire() as producer:
        for item_id in ids:
            app.send_task(TASK_NAME, args=(item_id,), producer=producer, retry=True)
