"""Local folders as a source, end to end: real worker processes, the emulator over HTTP (its
DescribeUploadToken and OSS PutObject, through the real alibabacloud-oss-v2 SDK), SQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Emulator, Stack, open_stack, running_emulator, stack_env
from worker.emulator.samples import png_bytes
from worker.processes import ImageServerHandle, wait_until

pytestmark = pytest.mark.service


@pytest.fixture
def folder_stack(
    database_url: str,
    redis_url: str,
    image_server: ImageServerHandle,
    tmp_path: Path,
) -> Iterator[Stack]:
    root = tmp_path / "oss"
    root.mkdir()
    with running_emulator(qps=100, latency_ms=5, oss_root=str(root), upload_token_ttl=2) as emu:
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


def _tree(base: Path, images: int) -> Path:
    """A folder: ``images`` distinct PNGs over nested dirs, a symlink out of the tree, a
    non-image file and an empty image."""
    top = base / "archive"
    for n in range(images):
        path = top / f"d{n % 3}" / f"sub{n % 2}" / f"img{n:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png_bytes(1000 + n))
    outside = base / "outside.png"
    outside.write_bytes(png_bytes(7))
    os.symlink(outside, top / "d0" / "escape.png")
    (top / "notes.txt.bak").write_text("not an image")
    (top / "d1" / "empty.jpg").write_bytes(b"")
    return top


def _oss_counts(emu: Emulator) -> dict[str, int]:
    return dict(emu.stats().get("oss", {}))


def test_a_folder_runs_to_done_billing_each_file_once_and_a_second_run_bills_nothing(
    folder_stack: Stack,
) -> None:
    stack = folder_stack
    top = _tree(stack.tmp, 12)
    stack.start_worker(concurrency=4)

    out = stack.imgmod("run", str(top), "--job", "f1", timeout=180)

    assert out.returncode == 3, out.stdout + out.stderr  # 3: the empty file is rejected
    assert stack.states("f1") == {"done": 12, "rejected": 1}
    assert stack.settled_stats()["billed"] == 12
    paths = {r[0] for r in stack.rows("SELECT local_path FROM items WHERE state = 'done'")}
    assert len(paths) == 12 and all(p.startswith(str(top)) for p in paths)
    assert not any("escape" in p or "notes" in p for p in paths)  # not followed, not an image
    (reason,) = stack.rows("SELECT last_error FROM items WHERE state = 'rejected'")[0]
    assert "empty" in reason
    answered = stack.scalar(
        "SELECT count(*) FROM results r JOIN items i ON i.id = r.item_id WHERE r.code = '200'"
    )
    assert answered == 12
    assert 1 <= _oss_counts(stack.emulator).get("upload_tokens", 0) < 12

    again = stack.imgmod("run", str(top), "--job", "f2", timeout=180)

    assert again.returncode == 3, again.stdout + again.stderr
    assert stack.settled_stats()["billed"] == 12  # reused by SHA-256: nothing billed
    assert stack.states("f2") == {"done": 12, "rejected": 1}


def test_a_file_deleted_or_changed_after_enqueue_fails_with_its_reason_and_no_call(
    folder_stack: Stack,
) -> None:
    stack = folder_stack
    top = _tree(stack.tmp, 4)
    gone = top / "d0" / "sub0" / "img000.png"
    edited = top / "d1" / "sub1" / "img001.png"
    out = stack.imgmod("enqueue", str(top), "--job", "g", timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    gone.unlink()
    edited.write_bytes(png_bytes(99))
    stack.start_worker(concurrency=2)

    def settled() -> bool:
        states = stack.states("g")
        return states.get("done", 0) + states.get("failed", 0) == 4

    wait_until(settled, 120, "the job to settle")

    failed = dict(stack.rows("SELECT last_code, last_error FROM items WHERE state = 'failed'"))
    assert set(failed) == {"vanished", "changed"}
    assert str(gone) in failed["vanished"] and str(edited) in failed["changed"]
    assert stack.settled_stats()["billed"] == 2


def test_upload_tokens_expire_during_a_job_and_are_refreshed_not_fetched_per_image(
    folder_stack: Stack,
) -> None:
    stack = folder_stack
    top = _tree(stack.tmp, 40)
    stack.emulator.configure(latency_ms=150)  # 40 images over 2 threads: past a 2 s token
    stack.start_worker(concurrency=2)

    out = stack.imgmod("run", str(top), "--job", "t", timeout=240)

    assert out.returncode == 3, out.stdout + out.stderr  # 3: the empty file is rejected
    assert stack.states("t") == {"done": 40, "rejected": 1}
    tokens = _oss_counts(stack.emulator).get("upload_tokens", 0)
    assert 1 < tokens < 20


def test_files_without_an_image_extension_run_when_named_by_include(folder_stack: Stack) -> None:
    stack = folder_stack
    top = stack.tmp / "scans"
    top.mkdir()
    for n in range(3):
        (top / f"scan{n}.dat").write_bytes(png_bytes(2000 + n))
    (top / "readme.txt").write_text("not named by --include")

    refused = stack.imgmod("enqueue", str(top), "--job", "plain", timeout=60)
    assert refused.returncode != 0 and "no image files" in refused.stderr
    assert "Traceback" not in refused.stderr
    stack.start_worker(concurrency=4)

    out = stack.imgmod("run", str(top), "--include", "*.dat", "--job", "dat", timeout=180)

    assert out.returncode == 0, out.stdout + out.stderr
    assert stack.states("dat") == {"done": 3}
    assert stack.settled_stats()["billed"] == 3
    nothing = stack.imgmod("enqueue", str(top), "--include", "*.raw", "--job", "raw", timeout=60)
    assert nothing.returncode != 0 and "--include '*.raw'" in nothing.stderr
