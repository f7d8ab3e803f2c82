"""The wall-clock deadline of one API call (``IMGMOD_CALL_DEADLINE``).

urllib3 knows per-read timeouts only, so a server sending a byte every half second holds a call
forever: past its row's lease, and another worker bills the image again. :class:`Watchdog` shuts
the socket of a call still running at its deadline; :class:`WatchedAdapter` is the requests
adapter whose connections (direct or through an HTTP proxy) it can see.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection


class Call:
    """One call in flight: when it must be over, and the connection it is using."""

    __slots__ = ("connection", "deadline", "expired")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.connection: HTTPConnection | None = None
        self.expired = False


class Watchdog:
    """Shuts down the socket of every call still running at its deadline.

    urllib3 knows per-read timeouts only; a thread blocked in a read can only be woken by its
    socket. One daemon thread per process serves every call, waking every ``TICK`` while calls
    are open and sleeping otherwise. A call owns its connection from the moment it sends on it
    (``_owner``); a connection already handed back to the pool and taken by another call is
    never touched, so the deadline of one call cannot break another.
    """

    TICK = 0.05

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._open: set[Call] = set()
        self._thread: threading.Thread | None = None
        self._local = threading.local()

    def begin(self, seconds: float) -> Call:
        call = Call(time.monotonic() + seconds)
        with self._cond:
            if self._thread is None or not self._thread.is_alive():  # first call, or forked
                self._thread = threading.Thread(
                    target=self._run, name="imgmod-call-deadline", daemon=True
                )
                self._thread.start()
            if not self._open:  # the watchdog sleeps untimed only when no call is open
                self._cond.notify()
            self._open.add(call)
        self._local.call = call
        return call

    def end(self, call: Call) -> None:
        self._local.call = None
        with self._cond:
            self._open.discard(call)

    def claim(self, connection: HTTPConnection) -> None:
        """The calling thread's call is about to use ``connection`` (connect or send)."""
        call: Call | None = getattr(self._local, "call", None)
        if call is None:
            return
        with self._cond:
            call.connection = connection
            connection._imgmod_owner = call  # type: ignore[attr-defined]

    def _run(self) -> None:
        with self._cond:
            while True:
                if not self._open:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                for call in [c for c in self._open if c.deadline <= now]:
                    self._open.discard(call)
                    call.expired = True
                    _cut(call)
                self._cond.wait(self.TICK)


def _cut(call: Call) -> None:
    """Shut the call's socket down (both ways), so its blocked read returns at once.

    Done on a duplicate of the descriptor: the socket object (maybe TLS) stays with its thread,
    which sees end-of-file or a reset and reports a timeout.
    """
    connection = call.connection
    if connection is None or getattr(connection, "_imgmod_owner", None) is not call:
        return
    sock = getattr(connection, "sock", None)
    if sock is None:
        return
    try:
        duplicate = socket.fromfd(sock.fileno(), sock.family, sock.type)
    except (OSError, ValueError):
        return  # already closed
    try:
        duplicate.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        duplicate.close()


WATCHDOG = Watchdog()


class WatchedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        WATCHDOG.claim(self)
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:
        WATCHDOG.claim(self)
        super().request(*args, **kwargs)


class WatchedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        WATCHDOG.claim(self)
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:
        WATCHDOG.claim(self)
        super().request(*args, **kwargs)


class WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = WatchedHTTPConnection


class WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = WatchedHTTPSConnection


WATCHED_POOLS: dict[str, type[HTTPConnectionPool]] = {
    "http": WatchedHTTPPool,
    "https": WatchedHTTPSPool,
}


class WatchedAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections (direct or through an HTTP proxy) the watchdog sees."""

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if isinstance(manager, PoolManager) and not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = WATCHED_POOLS
        return manager
