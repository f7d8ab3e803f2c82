"""A nightly job over an OSS prefix bills only what is new, end to end: ``imgmod run
oss://bucket/prefix/`` twice with a real worker, the emulator serving both the listing (through
the real OSS SDK) and ImageModeration on the listed OSS triples; then one object rewritten
(PutObject, new bytes, new ETag) and a third run bills exactly that one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import alibabacloud_oss_v2 as oss
import pytest

from tests.support import Emulator, Stack, running_emulator
from worker.emulator.samples import png_bytes

pytestmark = pytest.mark.service

REGION = "cn-hangzhou"
OBJECTS = 8


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    """Overrides the integration emulator: the same knobs, plus OSS over ``tmp_path/oss``
    holding a bucket ``archive`` with images under ``uploads/`` and one elsewhere."""
    bucket = tmp_path / "oss" / REGION / "archive"
    (bucket / "uploads").mkdir(parents=True)
    for n in range(OBJECTS):
        (bucket / "uploads" / f"{n:02d}.png").write_bytes(png_bytes(n))
    (bucket / "uploads" / "readme.txt").write_bytes(b"not an image")
    (bucket / "other.png").write_bytes(png_bytes(99))
    with running_emulator(
        qps=100, latency_ms=5, download_timeout=1.0, oss_root=tmp_path / "oss", oss_region=REGION
    ) as emu:
        yield emu


def _run(stack: Stack, job: str, *more: str) -> str:
    done = stack.imgmod(
        "run",
        "oss://archive/uploads/",
        "--oss-region",
        REGION,
        "--job",
        job,
        *more,
        IMGMOD_OSS_ENDPOINT=stack.emulator.oss_url,
    )
    assert done.returncode == 0, done.stdout + done.stderr + stack.worker_logs()
    return done.stdout


def _export(stack: Stack, job: str) -> dict[str, dict]:
    out = stack.imgmod("export", job, check=True).stdout
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    return {r["oss_object"]: r for r in records}


def _put(stack: Stack, key: str, body: bytes) -> None:
    cfg = oss.config.load_default()
    cfg.credentials_provider = oss.credentials.StaticCredentialsProvider(
        stack.emulator.access_key_id, stack.emulator.access_key_secret
    )
    cfg.region = REGION
    cfg.endpoint = stack.emulator.oss_url
    oss.Client(cfg).put_object(oss.PutObjectRequest(bucket="archive", key=key, body=body))


def test_a_rerun_of_an_unchanged_prefix_bills_nothing_and_a_changed_object_bills_once(
    pipeline: Stack,
) -> None:
    pipeline.start_worker(concurrency=4)
    _run(pipeline, "night-1")
    assert pipeline.settled_stats()["billed"] == OBJECTS
    first = _export(pipeline, "night-1")
    assert sorted(first) == [f"uploads/{n:02d}.png" for n in range(OBJECTS)]
    assert {(r["status"], r["reused"]) for r in first.values()} == {("done", False)}

    out = _run(pipeline, "night-2")

    assert f"{OBJECTS} reused a stored answer" in out, out
    assert pipeline.settled_stats()["billed"] == OBJECTS  # the second night billed 0
    second = _export(pipeline, "night-2")
    assert sorted(second) == sorted(first)
    for key, record in second.items():
        assert (record["status"], record["reused"]) == ("done", True), record
        assert record["request_id"] == first[key]["request_id"]
        assert record["moderated_at"] == first[key]["moderated_at"]
    report = pipeline.imgmod("report", "night-2", check=True).stdout
    assert "billable calls: 0" in report
    assert f"reused answers: {OBJECTS} ({OBJECTS} calls saved)" in report

    _put(pipeline, "uploads/03.png", png_bytes(1003))  # new bytes: a new ETag
    _run(pipeline, "night-3")

    assert pipeline.settled_stats()["billed"] == OBJECTS + 1
    third = _export(pipeline, "night-3")
    fresh = [key for key, r in third.items() if not r["reused"]]
    assert fresh == ["uploads/03.png"]
    assert third["uploads/03.png"]["status"] == "done"
    assert third["uploads/03.png"]["request_id"] != first["uploads/03.png"]["request_id"]
    assert pipeline.results_per_item_max() == 1
