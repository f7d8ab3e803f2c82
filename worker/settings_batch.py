"""How many item ids one broker message carries, parsed from the environment mapping that
:func:`worker.settings.load_settings` hands over (this module never reads ``os.environ``).

A Celery message costs the worker ~1.5 ms of CPU whatever it carries (kombu's delivery, the
request, the pool's hand-off, the ack: ``bench/profiling/``), a quarter of an image's CPU
when it carries one id. Several ids per message pay that once, and the task claims them in one
statement and stores their answers in one transaction. 1 keeps one message per image.
Kept apart from :mod:`worker.settings` so that module stays one reading long; the value
reaches the publishers and the task as ``Settings.batch``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# 16 (bench/RESULTS.md, issue 12, fifteenth session): per thread, a message's share of Celery's
# pool and of the consumer halves from 8 (~0.3 ms of CPU per image); 32 saves ~0.1 ms more but
# holds a message's first answers ~2 s (its rows are stored together, when the last is back).
DEFAULT_IDS_PER_MESSAGE = 16
BATCH_DEFAULTS: dict[str, str] = {"IMGMOD_IDS_PER_MESSAGE": str(DEFAULT_IDS_PER_MESSAGE)}
MAX_IDS_PER_MESSAGE = 100  # a message's ids are claimed, held and stored together


@dataclass(frozen=True)
class BatchSettings:
    ids_per_message: int = DEFAULT_IDS_PER_MESSAGE


def load_batch_settings(
    env: Mapping[str, str], error: type[ValueError] = ValueError
) -> BatchSettings:
    """The batching settings; raises ``error`` (settings passes its ConfigError) naming the
    variable and the fix."""
    raw = env.get("IMGMOD_IDS_PER_MESSAGE", BATCH_DEFAULTS["IMGMOD_IDS_PER_MESSAGE"]).strip()
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_IDS_PER_MESSAGE:
        raise error(
            f"IMGMOD_IDS_PER_MESSAGE={raw!r}: give a whole number from 1 to "
            f"{MAX_IDS_PER_MESSAGE} (1: one message per image)"
        )
    return BatchSettings(ids_per_message=int(raw))
