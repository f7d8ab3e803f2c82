"""The settings of ``imgmod act`` / ``imgmod restore``, parsed from the environment mapping that
:func:`worker.settings.load_settings` hands over (this module never reads ``os.environ``).

Kept apart from :mod:`worker.settings` so that module stays one reading long; the values reach
the commands as ``Settings.act``. The webhook secret is kept out of every repr.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

ACT_DEFAULTS: dict[str, str] = {
    # OSS requests (or webhook POSTs) per second of one imgmod act/restore: a backfill shares
    # the bucket, and its request rate, with the bucket's users
    "IMGMOD_ACT_QPS": "20",
    # the HMAC-SHA256 key of webhook signatures; empty: `act --action webhook` is refused
    "IMGMOD_WEBHOOK_SECRET": "",
}
MIN_SECRET = 16


@dataclass(frozen=True)
class ActSettings:
    qps: float = 20.0
    webhook_secret: bytes = field(default=b"", repr=False)


def load_act_settings(env: Mapping[str, str], error: type[ValueError] = ValueError) -> ActSettings:
    """The act/restore settings; raises ``error`` (settings passes its ConfigError) naming the
    variable and the fix, never the secret's value."""
    raw = env.get("IMGMOD_ACT_QPS", ACT_DEFAULTS["IMGMOD_ACT_QPS"]).strip()
    try:
        qps = float(raw)
    except ValueError:
        qps = 0.0
    if not qps > 0 or qps == float("inf"):
        raise error(f"IMGMOD_ACT_QPS={raw!r}: give requests per second, a number above 0")
    secret = env.get("IMGMOD_WEBHOOK_SECRET", "").strip()
    if secret and len(secret) < MIN_SECRET:
        raise error(
            f"IMGMOD_WEBHOOK_SECRET is {len(secret)} characters; use {MIN_SECRET} or more "
            "(a random string the receiver also holds; the value is not shown)"
        )
    return ActSettings(qps=qps, webhook_secret=secret.encode())
