"""The review page's app: routes, sessions, security headers, static files; and serving it.

:func:`build_app` wires what :func:`serve` (``imgmod ui``) and the tests give it. The session
cookie is signed with a key made at start (a restart signs everyone out, and no key sits in a
file or a setting); it is ``HttpOnly``, ``SameSite=Strict`` and expires with the session.
Every answer carries a Content-Security-Policy that allows scripts and styles from this server
only (pictures from anywhere: image URLs are shown as they are), no framing, and no Referer, so
neither the page's address nor a signed URL leaks to an image host.
"""

from __future__ import annotations

import logging
import secrets
import socket
from pathlib import Path

import jinja2
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from worker.settings import Credentials, Settings
from worker.ui import routes_admin, routes_auth, routes_browse, routes_queue
from worker.ui.auth import UsersFile
from worker.ui.images import Signer
from worker.ui.web import UiState

log = logging.getLogger("imgmod.ui")
HERE = Path(__file__).parent
ASSETS = HERE.parent / "assets"  # Chart.js and the report's chart code, shared with the report
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' http: https: data: blob:; script-src 'self'; "
        b"style-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        b"frame-ancestors 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every answer, and ``no-store`` to pages."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith(("/static/", "/assets/"))

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += SECURITY_HEADERS
                if not static and not any(k == b"cache-control" for k, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


async def _home(_request: object) -> Response:
    return RedirectResponse("/queue", status_code=303)


def build_app(
    settings: Settings,
    engine: Engine,
    credentials: Credentials | None = None,
    session_key: str | None = None,
) -> Starlette:
    """The app over ``engine``; OSS pictures are signed with ``credentials`` when given."""
    templates = Jinja2Templates(
        env=jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(HERE / "templates")), autoescape=True
        )
    )
    ui = UiState(
        settings=settings,
        engine=engine,
        users=UsersFile(settings.ui.users_file),
        signer=Signer(settings, credentials),
        templates=templates,
        credentials=credentials,
    )
    app = Starlette(
        routes=[
            Route("/", _home, methods=["GET"]),
            *routes_auth.ROUTES,
            *routes_queue.ROUTES,
            *routes_browse.ROUTES,
            *routes_admin.ROUTES,
            Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
            Mount("/assets", StaticFiles(directory=str(ASSETS)), name="assets"),
        ],
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(
                SessionMiddleware,
                secret_key=session_key or secrets.token_urlsafe(32),
                session_cookie="imgmod_ui",
                max_age=settings.ui.session_seconds,
                same_site="strict",
                https_only=False,  # loopback by default; a TLS proxy in front may add Secure
            ),
        ],
    )
    app.state.ui = ui
    return app


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything else starts: a port in use is one line
    from the command (OSError), not a server that dies after start."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: a response's headers and body go out at once instead of
    # the body waiting ~40 ms for the ACK of the headers on a kept-alive connection.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    return sock


def serve(
    settings: Settings,
    engine: Engine,
    credentials: Credentials | None,
    sock: socket.socket,
) -> None:
    """Run the app on ``sock`` until interrupted (uvicorn, one process: the skip lists live in
    this process's memory)."""
    import uvicorn

    app = build_app(settings, engine, credentials)
    host, port = sock.getsockname()[:2]
    log.info("imgmod ui listening on http://%s:%d", host, port)
    config = uvicorn.Config(app, log_config=None, server_header=False, access_log=True)
    uvicorn.Server(config).run(sockets=[sock])
