"""Running an aiohttp application until SIGINT/SIGTERM, announcing the bound address once.

Shared by the emulator and the sample image server. Port 0 picks a free port; the printed line
(``<banner> http://HOST:PORT``) is how a parent process learns it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import struct
from collections.abc import Callable

from aiohttp import web


async def serve(
    app: web.Application,
    host: str,
    port: int,
    banner: str,
    then_announce: Callable[[], str] | None = None,
) -> None:
    """Serve ``app`` until SIGINT/SIGTERM, printing ``<banner> http://HOST:PORT`` once bound.

    ``then_announce`` returns more lines to print right after it (the emulator's OSS port), so
    the first URL printed stays the app's own, which is what parents read.
    """
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    bound_port = port
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            bound_port = int(address[1])
            break
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(f"{banner} http://{host}:{bound_port}", flush=True)
    if then_announce is not None:
        print(then_announce(), flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def abort_connection(request: web.BaseRequest) -> web.Response:
    """Reset the client's TCP connection (RST, no answer); the returned response is never sent.

    SO_LINGER with a zero timeout makes the close a reset rather than an orderly FIN, which is
    what a crashed proxy looks like to the client.
    """
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return web.Response(status=499)
