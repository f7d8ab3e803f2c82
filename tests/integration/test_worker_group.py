"""`imgmod worker` as a group of processes (one per core by default): each child is a full
Celery worker with its share of the threads, the group does a job together, and a signal or a
dead child stops the whole group."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Emulator, Stack, open_stack, stack_env, start_imgmod, wait_until
from worker.processes import ImageServerHandle

pytestmark = pytest.mark.service

POOL_LINE = re.compile(r"runtime for (\d+) threads")


@pytest.fixture
def sqlite_stack(
    sqlite_url: str,
    redis_url: str,
    emulator: Emulator,
    image_server: ImageServerHandle,
    tmp_path: Path,
) -> Iterator[Stack]:
    env = stack_env(sqlite_url, redis_url, emulator)
    with open_stack(env, tmp_path, emulator, image_server) as stack:
        yield stack


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_two_processes_share_a_job_and_a_dead_one_stops_the_group(sqlite_stack: Stack) -> None:
    log = sqlite_stack.tmp / "group.log"
    with log.open("w") as out:
        group = start_imgmod(
            sqlite_stack.env, "worker", "--processes", "2", "-c", "8", stdout=out, stderr=out
        )
    try:
        wait_until(lambda: log.read_text().count(" ready.") >= 2, 90, "both processes ready")
        children = _children(group.pid)
        assert len(children) == 2
        src, _ = sqlite_stack.write_urls("group.txt", 60)
        sqlite_stack.imgmod("enqueue", str(src), "--job", "group", check=True)
        wait_until(lambda: sqlite_stack.counts("group")["done"] == 60, 90, "the job to finish")
        stats = sqlite_stack.emulator.stats()
        assert stats["billed"] == 60 and max(stats["billed_by_image"].values()) == 1
        # 8 threads split in two
        assert [int(n) for n in POOL_LINE.findall(log.read_text())] == [4, 4]

        os.kill(children[0], signal.SIGKILL)
        code = group.wait(timeout=90)
        assert code == signal.SIGKILL  # the dead child's signal, not a clean 0
        assert "stopping the others" in log.read_text()
        assert all(not Path(f"/proc/{pid}").exists() or _zombie(pid) for pid in children)
    finally:
        if group.poll() is None:
            group.kill()
            group.wait(timeout=30)


def test_sigterm_stops_every_process_warmly_and_exits_0(sqlite_stack: Stack) -> None:
    log = sqlite_stack.tmp / "term.log"
    with log.open("w") as out:
        group = start_imgmod(
            sqlite_stack.env, "worker", "--processes", "2", "-c", "4", stdout=out, stderr=out
        )
    try:
        wait_until(lambda: log.read_text().count(" ready.") >= 2, 90, "both processes ready")
        children = _children(group.pid)
        group.send_signal(signal.SIGTERM)
        assert group.wait(timeout=90) == 0, log.read_text()[-3000:]
        assert all(not Path(f"/proc/{pid}").exists() for pid in children)
    finally:
        if group.poll() is None:
            group.kill()
            group.wait(timeout=30)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
