"""kombu's Redis transport, with one Redis client per channel instead of one per command.

kombu 5's Redis channel builds a new ``redis.Redis`` object for every command it sends outside
the event loop (``conn_or_acquire``): an ack, a restore, a queue size. Building one fills a
table of ~250 response callbacks (a case-insensitive dict), which cost a worker ~0.3 ms of CPU
per message, more than the ack itself (``bench/profiling/README.md``). A ``redis.Redis`` is
safe to share between threads (each command takes a connection from the pool and gives it
back), so the channel keeps one, bound to the same pool kombu would have used; a new pool (after
a reconnect) gets a new client. Nothing else changes: the same commands, the same pool, the
same errors. :mod:`worker.app` names this transport for ``redis://`` and ``rediss://`` brokers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    """A kombu Redis channel that reuses its synchronous client."""

    _shared_client: Any = None
    _shared_lock = threading.Lock()

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        shared = self._shared_client
        pool = self.pool
        if shared is None or shared.connection_pool is not pool:
            with self._shared_lock:
                shared = self._shared_client
                if shared is None or shared.connection_pool is not pool:
                    shared = self._shared_client = self._new_client()
        yield shared

    def _new_client(self) -> Any:
        return self._create_client()  # type: ignore[no-untyped-call]


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`Channel`."""

    Channel = Channel


# What worker.app sets as Celery's ``broker_transport`` for a Redis broker URL.
TRANSPORT = f"{__name__}:Transport"
