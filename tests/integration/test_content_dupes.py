"""Byte-identical copies inside one job are billed once: real worker processes, the emulator
over HTTP (DescribeUploadToken, OSS PutObject, ImageModeration), SQLite and PostgreSQL.

The copies are inserted as waiters of the first row with their content (worker.store.waiters):
the window never publishes them, and the workers' refill loop settles them when that row is
answered (a copy of its answer) or fails (one copy is released and called itself)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Stack, open_stack, running_emulator, stack_env
from worker.emulator.samples import png_bytes
from worker.processes import ImageServerHandle, wait_until

pytestmark = pytest.mark.service


@pytest.fixture
def folder_stack(
    database_url: str, redis_url: str, image_server: ImageServerHandle, tmp_path: Path
) -> Iterator[Stack]:
    root = tmp_path / "oss"
    root.mkdir()
    with running_emulator(qps=100, latency_ms=20, oss_root=str(root)) as emu:
        env = stack_env(
            database_url,
            redis_url,
            emu,
            IMGMOD_OSS_ENDPOINT=emu.oss_url,
            IMGMOD_BACKOFF_BASE="0.1",
            IMGMOD_BACKOFF_CAP="1",
        )
        with open_stack(env, tmp_path, emu, image_server) as stack:
            yield stack


def _folder(base: Path, distinct: int, copies: int) -> Path:
    """``distinct`` different PNGs (a/NNN.png) and ``copies`` byte-identical copies of the
    first ones under other names, later in the walk (z/copyNNN.png)."""
    top = base / "archive"
    (top / "a").mkdir(parents=True)
    (top / "z").mkdir()
    for n in range(distinct):
        (top / "a" / f"{n:03d}.png").write_bytes(png_bytes(2000 + n))
    for n in range(copies):
        (top / "z" / f"copy{n:03d}.png").write_bytes(png_bytes(2000 + n % distinct))
    return top


def test_copies_in_one_folder_are_billed_once_and_take_the_original_s_answer(
    folder_stack: Stack,
) -> None:
    stack = folder_stack
    top = _folder(stack.tmp, 20, 2)
    stack.start_worker(concurrency=8)

    out = stack.imgmod("run", str(top), "--job", "dupes", timeout=180)

    assert out.returncode == 0, out.stdout + out.stderr
    assert stack.states("dupes") == {"done": 22}
    assert stack.settled_stats()["billed"] == 20  # distinct contents
    copies = stack.rows(
        "SELECT c.local_path, c.reused_from, rc.request_id, ro.request_id, o.local_path"
        " FROM items c JOIN items o ON o.id = c.reused_from"
        " JOIN results rc ON rc.item_id = c.id JOIN results ro ON ro.item_id = o.id"
    )
    assert len(copies) == 2
    for copy_path, _, copy_request, original_request, original_path in copies:
        assert "/z/copy" in copy_path and "/a/" in original_path
        assert Path(copy_path).read_bytes() == Path(original_path).read_bytes()
        assert copy_request == original_request
    assert stack.scalar("SELECT count(*) FROM items WHERE waits_for IS NOT NULL") == 0


def test_an_original_that_fails_releases_one_copy_which_is_called_itself(
    folder_stack: Stack,
) -> None:
    stack = folder_stack
    top = _folder(stack.tmp, 3, 2)  # copy000 and copy001... of a/000 and a/001
    (top / "z" / "copy002.png").write_bytes(png_bytes(2000))  # a second copy of a/000
    out = stack.imgmod("enqueue", str(top), "--job", "gone", timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert stack.scalar("SELECT count(*) FROM items WHERE waits_for IS NOT NULL") == 3
    (top / "a" / "000.png").unlink()  # the original of copy000 and copy002 vanishes
    stack.start_worker(concurrency=4)

    def settled() -> bool:
        states = stack.states("gone")
        return states.get("done", 0) + states.get("failed", 0) == 6

    wait_until(settled, 120, "the job to settle")

    assert stack.states("gone") == {"done": 5, "failed": 1}
    (reason,) = stack.rows("SELECT last_code FROM items WHERE state = 'failed'")[0]
    assert reason == "vanished"
    # a/001, a/002 and one copy of the vanished a/000 are billed; the other copies reuse
    assert stack.settled_stats()["billed"] == 3
    reused = dict(
        stack.rows(
            "SELECT c.local_path, o.local_path FROM items c JOIN items o ON o.id = c.reused_from"
        )
    )
    assert reused[str(top / "z" / "copy001.png")] == str(top / "a" / "001.png")
    assert reused[str(top / "z" / "copy002.png")] == str(top / "z" / "copy000.png")
