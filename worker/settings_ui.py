"""The review page's settings (``imgmod ui``), parsed from the environment mapping that
:func:`worker.settings.load_settings` hands over (this module never reads ``os.environ``).

Kept apart from :mod:`worker.settings` so that module stays one reading long; the values
reach the app as ``Settings.ui``. Safe by default: sign-in from a users file, no trusted
proxy header, high-risk images blurred, sessions of eight hours.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

UI_DEFAULTS: dict[str, str] = {
    # users, roles and scrypt password hashes, one per line (`imgmod ui adduser NAME`)
    "IMGMOD_UI_USERS": "imgmod-ui-users.txt",
    # a reverse proxy's header naming the signed-in user; empty: off. Honoured only from loopback.
    "IMGMOD_UI_TRUSTED_HEADER": "",
    # 1: high-risk images are blurred until clicked (reviewer wellbeing); 0: shown as they are
    "IMGMOD_UI_BLUR": "1",
    # a session ends this long after sign-in
    "IMGMOD_UI_SESSION_SECONDS": "28800",
    # a reviewer holds an image this long before it returns to the queue
    "IMGMOD_UI_LEASE_SECONDS": "300",
}
_HEADER = re.compile(r"^[A-Za-z0-9-]{1,64}$")


@dataclass(frozen=True)
class UiSettings:
    users_file: str = UI_DEFAULTS["IMGMOD_UI_USERS"]
    trusted_header: str = ""  # lower-case header name; "" when no proxy is trusted
    blur_high_risk: bool = True
    session_seconds: int = 28800
    lease_seconds: int = 300


def _seconds(env: Mapping[str, str], name: str, error: type[ValueError]) -> int:
    raw = env.get(name, UI_DEFAULTS[name]).strip()
    if not raw.isdigit() or int(raw) < 1:
        raise error(f"{name}={raw!r}: give a whole number of seconds, at least 1")
    return int(raw)


def load_ui_settings(env: Mapping[str, str], error: type[ValueError] = ValueError) -> UiSettings:
    """The review page's settings; raises ``error`` (settings passes its ConfigError) naming
    the variable and the fix."""
    header = env.get("IMGMOD_UI_TRUSTED_HEADER", "").strip()
    if header and not _HEADER.match(header):
        raise error(
            f"IMGMOD_UI_TRUSTED_HEADER={header!r} is not a header name (letters, digits, '-')"
        )
    blur = env.get("IMGMOD_UI_BLUR", UI_DEFAULTS["IMGMOD_UI_BLUR"]).strip().lower()
    if blur not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
        raise error(f"IMGMOD_UI_BLUR={blur!r}: use 1 or 0")
    return UiSettings(
        users_file=env.get("IMGMOD_UI_USERS", "").strip() or UI_DEFAULTS["IMGMOD_UI_USERS"],
        trusted_header=header.lower(),
        blur_high_risk=blur in ("1", "true", "yes", "on"),
        session_seconds=_seconds(env, "IMGMOD_UI_SESSION_SECONDS", error),
        lease_seconds=_seconds(env, "IMGMOD_UI_LEASE_SECONDS", error),
    )
