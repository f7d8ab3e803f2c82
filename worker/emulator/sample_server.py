"""A local image host for demos and tests, every answer deterministic by path.

==========================  =================================================================
path                        answer
==========================  =================================================================
``/img/<n>.<ext>``          a small valid image (png, jpg, gif, bmp, webp); see ``samples``
``/slow/<n>.png?ms=4000``   the bytes of ``/img/<n>.png`` after ``ms`` milliseconds
``/missing/<n>.png``        HTTP 404
``/text/<n>.txt``           a text file (not an image)
``/big/<n>.png``            a PNG over 20 MB, streamed lazily
``/wide/<n>.png``           a PNG whose header says 20000 x 100
``/reset/<n>.png``          the connection is dropped without an answer
==========================  =================================================================
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from worker.emulator.samples import (
    BIG_PNG_SIZE,
    EXTENSIONS,
    big_png_chunks,
    sample_image_bytes,
    wide_png_bytes,
)
from worker.emulator.serving import abort_connection, serve

_CONTENT_TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "gif": "image/gif",
    "bmp": "image/bmp",
    "webp": "image/webp",
}
_MAX_SLOW_MS = 120_000


def _number(request: web.Request) -> int:
    try:
        return int(request.match_info["n"])
    except ValueError:
        raise web.HTTPNotFound() from None


async def image(request: web.Request) -> web.Response:
    ext = request.match_info["ext"]
    if ext not in EXTENSIONS:
        raise web.HTTPNotFound()
    return web.Response(
        body=sample_image_bytes(_number(request), ext), content_type=_CONTENT_TYPES[ext]
    )


async def slow(request: web.Request) -> web.Response:
    n = _number(request)
    try:
        delay_ms = min(float(request.query.get("ms", "4000")), _MAX_SLOW_MS)
    except ValueError:
        raise web.HTTPBadRequest(text="ms must be a number of milliseconds") from None
    await asyncio.sleep(max(delay_ms, 0.0) / 1000.0)
    return web.Response(body=sample_image_bytes(n, "png"), content_type="image/png")


async def missing(request: web.Request) -> web.Response:
    raise web.HTTPNotFound(text=f"no image {request.match_info['n']} here")


async def text(request: web.Request) -> web.Response:
    return web.Response(text=f"this is text file {_number(request)}, not an image\n")


async def big(request: web.Request) -> web.StreamResponse:
    n = _number(request)
    response = web.StreamResponse(headers={"Content-Type": "image/png"})
    response.content_length = BIG_PNG_SIZE
    await response.prepare(request)
    try:
        for chunk in big_png_chunks(n):
            await response.write(chunk)
    except (ConnectionResetError, ConnectionError):
        return response  # the reader stopped at its limit, as the emulator does past 20 MB
    await response.write_eof()
    return response


async def wide(request: web.Request) -> web.Response:
    return web.Response(body=wide_png_bytes(_number(request)), content_type="image/png")


async def reset(request: web.Request) -> web.Response:
    return abort_connection(request)


def build_sample_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/img/{n}.{ext}", image)
    app.router.add_get("/slow/{n}.png", slow)
    app.router.add_get("/missing/{n}.png", missing)
    app.router.add_get("/text/{n}.txt", text)
    app.router.add_get("/big/{n}.png", big)
    app.router.add_get("/wide/{n}.png", wide)
    app.router.add_get("/reset/{n}.png", reset)
    return app


def run_sample_server(host: str = "127.0.0.1", port: int = 8081) -> None:
    asyncio.run(serve(build_sample_app(), host, port, "sample images on"))
