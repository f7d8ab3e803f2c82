"""The commands around a job: export, report, retry, status, exit codes."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime

import pytest

pytestmark = pytest.mark.service

EXPORT_KEYS = {
    "job",
    "image_url",
    "oss_bucket",
    "oss_object",
    "oss_region",
    "data_id",
    "line",
    "status",
    "risk_level",
    "labels",
    "ext",
    "request_id",
    "code",
    "msg",
    "attempts",
    "error",
    "moderated_at",
}


@pytest.fixture
def finished_job(pipeline):
    img = pipeline.images
    lines = [img.image_url(i) for i in range(12)]
    lines += [f"{img.url}/missing/{i}.png" for i in range(2)] + ["ftp://nope/x.png"]
    src = pipeline.write("job.txt", lines)
    pipeline.start_worker(concurrency=8)
    run = pipeline.imgmod("run", str(src), "--job", "cmd")
    assert run.returncode == 3, run.stdout + run.stderr
    return pipeline


def _jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_export_jsonl_has_every_documented_field_for_every_reference(finished_job) -> None:
    records = _jsonl(finished_job.imgmod("export", "cmd", check=True).stdout)
    assert len(records) == 15
    assert all(set(r) >= EXPORT_KEYS for r in records)
    done = [r for r in records if r["status"] == "done"]
    assert len(done) == 12
    for r in done:
        assert r["code"] == "200" and r["request_id"]
        assert datetime.fromisoformat(r["moderated_at"].replace("Z", "+00:00")).tzinfo
        assert r["labels"] and {"label", "confidence", "description", "risk_level"} <= set(
            r["labels"][0]
        )
    failed = [r for r in records if r["status"] == "failed"]
    assert {r["code"] for r in failed} == {"404"}
    rejected = [r for r in records if r["status"] == "rejected"]
    assert rejected[0]["line"] == 15 and "imageUrl" in rejected[0]["error"]


def test_export_filters_by_status_risk_and_label(finished_job) -> None:
    everything = _jsonl(finished_job.imgmod("export", "cmd", check=True).stdout)
    high = _jsonl(finished_job.imgmod("export", "cmd", "--risk", "high", check=True).stdout)
    assert [r["image_url"] for r in high] == [
        r["image_url"] for r in everything if r["risk_level"] == "high"
    ]
    some = next(r for r in everything if r["labels"] and r["labels"][0]["confidence"])
    label, conf = some["labels"][0]["label"], some["labels"][0]["confidence"]
    picked = _jsonl(
        finished_job.imgmod(
            "export", "cmd", "--label", label, "--min-confidence", str(conf), check=True
        ).stdout
    )
    assert some["image_url"] in {r["image_url"] for r in picked}
    for r in picked:
        assert any(
            lab["label"] == label and (lab["confidence"] or 0) >= conf for lab in r["labels"]
        )
    failed = _jsonl(finished_job.imgmod("export", "cmd", "--status", "failed", check=True).stdout)
    assert {r["status"] for r in failed} == {"failed"} and len(failed) == 2


def test_export_csv_has_a_header_and_one_row_per_reference(finished_job, tmp_path) -> None:
    out = tmp_path / "out.csv"
    finished_job.imgmod("export", "cmd", "--format", "csv", "-o", str(out), check=True)
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 15 and set(rows[0]) >= EXPORT_KEYS


def test_report_counts_billable_calls_and_failures(finished_job) -> None:
    text = finished_job.imgmod("report", "cmd", check=True).stdout
    assert "billable calls: 12" in text and "404 2" in text
    rep = json.loads(finished_job.imgmod("report", "cmd", "--json", check=True).stdout)
    assert rep["billable_calls"] == 12 == finished_job.emulator.stats()["billed"]


def test_retry_reruns_only_the_failed_rows_of_that_code(finished_job) -> None:
    out = finished_job.imgmod("retry", "cmd", "--code", "405", check=True)
    assert "re-queued 0" in out.stdout
    out = finished_job.imgmod("retry", "cmd", "--code", "404", check=True)
    assert "re-queued 2" in out.stdout
    wait = finished_job.imgmod("wait", "cmd", "--timeout", "60")
    assert wait.returncode == 3
    status = json.loads(finished_job.imgmod("status", "cmd", "--json", check=True).stdout)
    assert status["states"]["failed"] == 2 and status["states"]["done"] == 12
    assert finished_job.emulator.stats()["billed"] == 12


def test_configuration_errors_exit_2_naming_the_variable(pipeline) -> None:
    out = pipeline.imgmod("status", IMGMOD_QPS="fast")
    assert out.returncode == 2 and "IMGMOD_QPS" in out.stderr
    out = pipeline.imgmod("status", "no-such-job")
    assert out.returncode == 2 and "no job named" in out.stderr
    out = pipeline.imgmod("enqueue", "/nonexistent.txt", "--job", "x")
    assert out.returncode == 2 and "not found" in out.stderr
