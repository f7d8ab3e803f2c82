"""A worker sizes its pools for the threads it really runs: ``imgmod worker -c N`` wins over
IMGMOD_WORKER_CONCURRENCY, as Celery's own thread pool does."""

from __future__ import annotations

import re

import pytest

from tests.support import Stack, wait_until

pytestmark = pytest.mark.service

POOL_LINE = re.compile(r"runtime for (\d+) threads: database pool (\d+)\+(\d+), HTTP pool (\d+)")


def test_a_worker_started_with_c_sizes_its_pools_for_those_threads(pipeline: Stack) -> None:
    worker = pipeline.start_worker(concurrency=4, IMGMOD_WORKER_CONCURRENCY="192")
    line = wait_until(lambda: POOL_LINE.search(worker.log()), 30, "the runtime's pool sizes")
    assert line.groups() == ("4", "8", "0", "4")
