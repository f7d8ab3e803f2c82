"""Sign in and sign out. A failed sign-in says only that the name or password is wrong."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from worker.ui import csrf
from worker.ui.auth import UsersFileError
from worker.ui.web import blocking, current_user, refuse, render, state


def _next(raw: object) -> str:
    """Where to go after signing in: a path on this site only (never ``//host`` or a URL)."""
    target = raw if isinstance(raw, str) else ""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/queue"
    return target


async def login_page(request: Request) -> Response:
    if current_user(request) is not None:
        return RedirectResponse(_next(request.query_params.get("next")), status_code=303)
    return render(request, "login.html", {"next": _next(request.query_params.get("next"))})


async def login(request: Request) -> Response:
    form = await request.form()
    given = form.get(csrf.FIELD)
    if not csrf.token_ok(request.session, given if isinstance(given, str) else None):
        return refuse(request, 403, "the sign-in form was stale (no CSRF token): reload and retry")
    name, password = form.get("name"), form.get("password")
    target = _next(form.get("next"))
    if not isinstance(name, str) or not isinstance(password, str):
        return render(
            request, "login.html", {"error": "give a name and a password", "next": target}, 400
        )
    try:
        user = await blocking(state(request).users.verify, name.strip(), password)
    except UsersFileError as exc:
        return refuse(request, 503, str(exc))
    if user is None:
        return render(
            request, "login.html", {"error": "wrong name or password", "next": target}, 401
        )
    request.session.clear()  # a fresh session (and CSRF token) on every sign-in
    request.session.update({"user": user.name, "at": int(time.time())})
    csrf.session_token(request.session)
    return RedirectResponse(target, status_code=303)


async def logout(request: Request) -> Response:
    form = await request.form()
    given = form.get(csrf.FIELD)
    if not csrf.token_ok(request.session, given if isinstance(given, str) else None):
        return refuse(request, 403, "sign-out without its CSRF token; reload and retry")
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


ROUTES = [
    Route("/login", login_page, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
]
