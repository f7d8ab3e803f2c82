"""What every route of the review page shares: the app's state, who is signed in, the role a
route needs, the CSRF check of a POST, and rendering a template (autoescaped).

Sign-in is one of two ways: a session cookie (signed, ``SameSite=Strict``, ending
``IMGMOD_UI_SESSION_SECONDS`` after sign-in) made by the login form, or, when
``IMGMOD_UI_TRUSTED_HEADER`` is set, that header from a reverse proxy on this host (a request
from anywhere else is not trusted with it). Either way the user must be in the users file,
which gives the role, so removing a line there locks the user out at once.
"""

from __future__ import annotations

import functools
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from worker.settings import Credentials, Settings, is_loopback_host
from worker.store.review_queue import QueueMarks
from worker.ui import csrf
from worker.ui.auth import User, UsersFile, UsersFileError, allowed
from worker.ui.images import Signer

Endpoint = Callable[[Request], Awaitable[Response]]
SKIPS_KEPT = 500  # a reviewer's skipped images kept out of their queue (this process's memory)


@dataclass
class UiState:
    """Built once by :func:`worker.ui.app.build_app`; shared by every request."""

    settings: Settings
    engine: Engine
    users: UsersFile
    signer: Signer
    templates: Jinja2Templates
    skipped: dict[str, deque[int]] = field(default_factory=dict)
    credentials: Credentials | None = field(default=None, repr=False)  # OSS: sign, act
    marks: QueueMarks = field(default_factory=QueueMarks)  # where each queue's live part starts

    def skips(self, user: str) -> deque[int]:
        return self.skipped.setdefault(user, deque(maxlen=SKIPS_KEPT))


def state(request: Request) -> UiState:
    found: UiState = request.app.state.ui
    return found


def _from_header(request: Request, ui: UiState) -> User | None:
    header = ui.settings.ui.trusted_header
    if not header:
        return None
    name = request.headers.get(header)
    client = request.client.host if request.client else ""
    if not name or not is_loopback_host(client):
        return None
    return ui.users.get(name.strip())


def current_user(request: Request) -> User | None:
    """The signed-in user (session or trusted header), still in the users file; else None."""
    ui = state(request)
    user = _from_header(request, ui)
    if user is not None:
        return user
    name = request.session.get("user")
    started = request.session.get("at", 0)
    if not isinstance(name, str) or not isinstance(started, int | float):
        return None
    if time.time() - started > ui.settings.ui.session_seconds:
        request.session.clear()
        return None
    return ui.users.get(name)


def refuse(request: Request, status: int, message: str) -> Response:
    """A page (or, for the page's script, a JSON body) with one clear line."""
    if request.headers.get("accept", "").startswith("application/json"):
        from starlette.responses import JSONResponse

        return JSONResponse({"error": message}, status_code=status)
    return render(request, "message.html", {"message": message}, status=status)


def needs(role: str, *, post: bool = False) -> Callable[[Endpoint], Endpoint]:
    """Route decorator: a signed-in user with at least ``role``; for a POST, a good CSRF token
    too. The endpoint finds the user at ``request.state.user``."""

    def wrap(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def checked(request: Request) -> Response:
            try:
                user = current_user(request)
            except UsersFileError as exc:
                return refuse(request, 503, str(exc))
            if user is None:
                if post:
                    return refuse(request, 401, "sign in first; nothing was changed")
                target = quote(
                    request.url.path + ("?" + request.url.query if request.url.query else "")
                )
                return RedirectResponse(f"/login?next={target}", status_code=303)
            request.state.user = user
            if post:
                form = await request.form()
                given = form.get(csrf.FIELD) or request.headers.get(csrf.HEADER)
                if not csrf.token_ok(request.session, given if isinstance(given, str) else None):
                    return refuse(
                        request,
                        403,
                        "this form is missing its CSRF token or it is stale: "
                        "reload the page and try again; nothing was changed",
                    )
            if not allowed(user.role, role):
                return refuse(
                    request, 403, f"{user.name} is a {user.role}; this needs the {role} role"
                )
            return await endpoint(request)

        return checked

    return wrap


def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    ui = state(request)
    user = getattr(request.state, "user", None)
    page = {
        "user": user,
        "csrf": csrf.session_token(request.session),
        "blur": ui.settings.ui.blur_high_risk,
        **context,
    }
    response: HTMLResponse = ui.templates.TemplateResponse(request, name, page, status_code=status)
    return response


async def blocking(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a store call (blocking SQL) off the event loop."""
    return await run_in_threadpool(fn, *args, **kwargs)
