"""Every pool of a worker process is sized from the threads it runs: one connection of each kind
per thread at most, plus the process's own helpers, within what PostgreSQL can give."""

from __future__ import annotations

import pytest

from worker.app import broker_pool_limit
from worker.client import ModerationClient
from worker.runtime import database_pool
from worker.settings import Credentials, load_settings


@pytest.mark.parametrize(
    ("threads", "pool"),
    [(1, (5, 0)), (4, (8, 0)), (16, (20, 0)), (32, (20, 16)), (192, (20, 40)), (1000, (20, 40))],
)
def test_the_database_pool_follows_the_threads_up_to_sixty_connections(
    threads: int, pool: tuple[int, int]
) -> None:
    assert database_pool(threads) == pool


def test_the_broker_pool_has_a_connection_per_thread_and_eight_spare() -> None:
    assert broker_pool_limit(16) == 24
    assert broker_pool_limit(192) == 200


@pytest.mark.parametrize("threads", [4, 192])
def test_the_http_pool_keeps_one_connection_per_thread(threads: int) -> None:
    settings = load_settings({"IMGMOD_WORKER_CONCURRENCY": str(threads)})
    client = ModerationClient.from_settings(settings, Credentials("id", "secret"))
    try:
        adapter = client._session.get_adapter(client.endpoint)
        assert adapter._pool_maxsize == threads
    finally:
        client.close()
