"""CSRF tokens: every POST of the review page carries the session's token, or changes nothing.

The token is random per session, kept in the signed session cookie and echoed by every form
(a hidden ``csrf`` field) or by the page's script (the ``X-CSRF-Token`` header). The session
cookie is also ``SameSite=Strict``; the token is what holds when a browser ignores that.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import MutableMapping
from typing import Any

FIELD = "csrf"
HEADER = "x-csrf-token"


def session_token(session: MutableMapping[str, Any]) -> str:
    """The session's token, made on first use."""
    token = session.get(FIELD)
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        session[FIELD] = token
    return token


def token_ok(session: MutableMapping[str, Any], given: str | None) -> bool:
    """Whether ``given`` is this session's token (constant-time compare)."""
    expected = session.get(FIELD)
    if not isinstance(expected, str) or not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())
