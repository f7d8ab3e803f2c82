"""The listing's read-ahead (:func:`worker.sources.oss_prefix.prefetched`): pages in order from
the saved token, at most one page ahead of the caller, and a failed page raised in order."""

from __future__ import annotations

import threading

import pytest

from worker.oss import Page
from worker.processes import wait_until
from worker.sources.oss_prefix import prefetched


def _pages(n: int) -> dict[str | None, Page]:
    tokens = [None, *[f"t{i}" for i in range(1, n)]]
    return {tok: Page((), tokens[i + 1] if i + 1 < n else None) for i, tok in enumerate(tokens)}


def test_pages_come_in_order_from_the_saved_token() -> None:
    pages = _pages(5)
    asked: list[str | None] = []

    def fetch(token: str | None) -> Page:
        asked.append(token)
        return pages[token]

    got = [p.next_token for p in prefetched(fetch, "t2")]
    assert got == ["t3", "t4", None]
    assert asked == ["t2", "t3", "t4"]


def test_it_reads_at_most_one_page_ahead_of_the_caller() -> None:
    pages = _pages(10)
    asked: list[str | None] = []
    lock = threading.Lock()

    def fetch(token: str | None) -> Page:
        with lock:
            asked.append(token)
        return pages[token]

    it = prefetched(fetch, None)
    next(it)
    # the page handed out, one waiting in the queue, one fetched and waiting to be queued
    wait_until(lambda: len(asked) == 3, 5, "the read-ahead to fill")
    assert len(asked) == 3
    it.close()


def test_a_failed_page_is_raised_after_the_pages_before_it() -> None:
    pages = _pages(4)

    def fetch(token: str | None) -> Page:
        if token == "t2":
            raise RuntimeError("listing refused")
        return pages[token]

    it = prefetched(fetch, None)
    assert next(it).next_token == "t1"
    assert next(it).next_token == "t2"
    with pytest.raises(RuntimeError, match="listing refused"):
        next(it)
