"""Pay once per image: rows of a later job take a stored answer instead of a call.

The store tests go through the real producer (:func:`worker.producer.enqueue_records`) on SQLite
and PostgreSQL; the billing tests run whole jobs through ``imgmod run``, real Celery workers and
the emulator, and count what the emulator billed.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from worker import producer, reports, store
from worker.params import ImageRef
from worker.results import parse_response
from worker.sources import Accepted
from worker.sources.oss_prefix import ListedObject

pytestmark = pytest.mark.service

VENDOR = Path(__file__).resolve().parent.parent / "data" / "vendor"
SERVICE = "baselineCheck_global"
INFO = "customImage,textInImage"
MD5 = "5EB63BBBE01EEED093CB22BB8F5ACDC3"  # as OSS spells a PutObject ETag: upper case


def listed(key: str, etag: str = MD5, size: int = 1234, bucket: str = "archive") -> ListedObject:
    ref = ImageRef(oss_bucket=bucket, oss_object=key, oss_region="ap-southeast-1")
    moment = datetime(2025, 11, 1, tzinfo=timezone.utc)
    return ListedObject(ref, f"oss://{bucket}/", 1, f'"{etag}"', size, moment)


def url(n: int) -> Accepted:
    return Accepted(ImageRef(image_url=f"https://example.com/{n}.jpg"), "in.txt", n)


def enqueue(
    engine: sa.Engine,
    name: str,
    records: list,
    *,
    info_type: str = INFO,
    rescan: bool = False,
    reuse_urls: bool = False,
) -> tuple[store.Job, producer.EnqueueSummary]:
    job = store.get_or_create_job(engine, name, SERVICE, info_type)
    scope = producer.reuse_scope(job, rescan=rescan, reuse_urls=reuse_urls)
    return job, producer.enqueue_records(engine, job, records, lambda: 0, reuse=scope)


def answer_all(engine: sa.Engine, job: store.Job) -> dict[int, str]:
    """Store a (billed) vendor answer for every pending row, as a worker would; returns the
    RequestId stored per item."""
    text = (VENDOR / "response_risk_detected.json").read_text(encoding="utf-8")
    stored = {}
    with engine.connect() as conn:
        ids = conn.execute(
            sa.select(store.items.c.id).where(
                store.items.c.job_id == job.id, store.items.c.state == "pending"
            )
        ).scalars()
    for item_id in ids:
        raw = json.loads(text)
        raw["RequestId"] = f"REQ-{job.name}-{item_id}"
        store.record_result(engine, item_id, "w", SERVICE, parse_response(json.dumps(raw), 200))
        stored[item_id] = raw["RequestId"]
    return stored


def rows(engine: sa.Engine, job: store.Job) -> list[sa.Row]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(store.items).where(store.items.c.job_id == job.id).order_by("id")
            )
        )


def test_an_unchanged_oss_object_in_another_job_takes_the_stored_answer(engine) -> None:
    first, _ = enqueue(engine, "night-1", [listed("a.png"), listed("b.png", etag="B" * 32)])
    paid = answer_all(engine, first)

    second, summary = enqueue(engine, "night-2", [listed("a.png"), listed("b.png", etag="B" * 32)])

    assert summary.accepted == 2 and summary.reused == 2
    assert {r.state for r in rows(engine, second)} == {"done"}
    assert {r.reused_from for r in rows(engine, second)} == set(paid)
    exported = list(reports.export_records(engine, second, reports.ExportFilter()))
    original = {
        r["oss_object"]: r for r in reports.export_records(engine, first, reports.ExportFilter())
    }
    for record in exported:
        before = original[record["oss_object"]]
        assert record["reused"] is True and before["reused"] is False
        assert record["status"] == "done" and record["code"] == "200"
        same = ("request_id", "moderated_at", "risk_level", "labels", "ext", "msg")
        assert {k: record[k] for k in same} == {k: before[k] for k in same}
        assert record["labels"]  # copied, in the original's order
    report = reports.build_report(engine, second)
    assert (report.billable_calls, report.reused) == (0, 2)
    assert "reused answers: 2 (2 calls saved)" in reports.render_report(report)
    assert reports.build_report(engine, first).billable_calls == 2
    # the copy is a row of its own: label searches of the new job find it
    labelled = list(reports.export_records(engine, second, reports.ExportFilter(min_confidence=0)))
    assert len(labelled) == 2


def test_a_changed_object_or_another_info_type_is_called_again(engine) -> None:
    first, _ = enqueue(engine, "old", [listed("a.png"), listed("b.png", etag="B" * 32)])
    answer_all(engine, first)

    changed, summary = enqueue(engine, "changed", [listed("a.png", etag="C" * 32)])
    assert summary.reused == 0 and [r.state for r in rows(engine, changed)] == ["pending"]

    other, summary = enqueue(engine, "other-info", [listed("b.png", etag="B" * 32)], info_type="")
    assert summary.reused == 0 and [r.state for r in rows(engine, other)] == ["pending"]


def test_rescan_calls_again_for_every_image(engine) -> None:
    first, _ = enqueue(engine, "first", [listed("a.png")])
    answer_all(engine, first)

    again, summary = enqueue(engine, "again", [listed("a.png")], rescan=True)

    assert summary.reused == 0
    assert [(r.state, r.reused_from) for r in rows(engine, again)] == [("pending", None)]
    assert rows(engine, again)[0].identity == rows(engine, first)[0].identity  # still recorded


def test_same_md5_etag_and_size_under_another_key_is_the_same_content(engine) -> None:
    first, _ = enqueue(engine, "uploads", [listed("2024/cat.png")])
    paid = answer_all(engine, first)

    copies, summary = enqueue(
        engine,
        "copies",
        [
            listed("backup/cat-copy.png", bucket="other-bucket"),  # same bytes, another name
            listed("resized.png", size=999),  # same ETag, another size: not the same content
        ],
    )

    assert summary.reused == 1
    by_key = {r.oss_object: r for r in rows(engine, copies)}
    assert by_key["backup/cat-copy.png"].state == "done"
    assert by_key["backup/cat-copy.png"].reused_from == next(iter(paid))
    assert (by_key["resized.png"].state, by_key["resized.png"].reused_from) == ("pending", None)


def test_a_multipart_etag_is_never_a_content_key(engine) -> None:
    multipart = "0F343B0931126A20F133D67C2B018A3B-3"
    first, _ = enqueue(engine, "big", [listed("video-frame.png", etag=multipart)])
    answer_all(engine, first)

    other, summary = enqueue(engine, "big-copy", [listed("elsewhere.png", etag=multipart)])
    assert summary.reused == 0 and [r.state for r in rows(engine, other)] == ["pending"]
    assert rows(engine, other)[0].content_key is None

    # ...while the same object (bucket, key, multipart ETag) is still known by its identity
    same, summary = enqueue(engine, "big-again", [listed("video-frame.png", etag=multipart)])
    assert summary.reused == 1


def test_urls_are_reused_only_on_request(engine) -> None:
    first, _ = enqueue(engine, "urls-1", [url(n) for n in range(3)])
    answer_all(engine, first)

    plain, summary = enqueue(engine, "urls-2", [url(n) for n in range(3)])
    assert summary.reused == 0 and {r.state for r in rows(engine, plain)} == {"pending"}

    opted, summary = enqueue(engine, "urls-3", [url(n) for n in range(4)], reuse_urls=True)
    assert summary.reused == 3
    states = [r.state for r in rows(engine, opted)]
    assert states == ["done", "done", "done", "pending"]  # the fourth URL is new


def test_the_lookup_is_a_few_statements_per_batch_whatever_its_size(engine) -> None:
    first, _ = enqueue(engine, "base", [listed(f"{n}.png", etag=f"{n:032X}") for n in range(400)])
    answer_all(engine, first)
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        enqueue(engine, "small", [listed(f"{n}.png", etag=f"{n:032X}") for n in range(4)])
        small = len(statements)
        statements.clear()
        _, summary = enqueue(
            engine, "large", [listed(f"{n}.png", etag=f"{n:032X}") for n in range(400)]
        )
        large = len(statements)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert summary.reused == 400
    assert large == small, statements


def test_a_reused_row_is_never_handed_to_a_worker(engine) -> None:
    first, _ = enqueue(engine, "paid", [listed("a.png")])
    answer_all(engine, first)
    second, _ = enqueue(engine, "free", [listed("a.png")])

    assert store.take_pending(engine, second.id, 100) == []
    (item,) = rows(engine, second)
    assert store.claim_item(engine, item.id, "w1", 60) is None


# --------------------------------------------------------------------------- whole jobs, billed


def _export(stack, job: str) -> list[dict]:
    out = stack.imgmod("export", job, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_a_second_job_over_the_same_urls_bills_only_what_reuse_cannot_save(pipeline) -> None:
    src = pipeline.urls(6)
    pipeline.start_worker(concurrency=4)
    first = pipeline.imgmod("run", str(src), "--job", "first")
    assert first.returncode == 0, first.stdout + first.stderr
    assert pipeline.settled_stats()["billed"] == 6
    paid = {r["image_url"]: r for r in _export(pipeline, "first")}

    again = pipeline.imgmod("run", str(src), "--job", "second", "--reuse-urls")

    assert again.returncode == 0, again.stdout + again.stderr
    assert "6 reused a stored answer" in again.stdout
    assert pipeline.settled_stats()["billed"] == 6  # nothing new billed
    for record in _export(pipeline, "second"):
        before = paid[record["image_url"]]
        assert (record["status"], record["reused"], before["reused"]) == ("done", True, False)
        assert record["request_id"] == before["request_id"]
        assert record["moderated_at"] == before["moderated_at"]
    report = pipeline.imgmod("report", "second", check=True).stdout
    assert "billable calls: 0" in report and "reused answers: 6 (6 calls saved)" in report

    plain = pipeline.imgmod("run", str(src), "--job", "third")  # URLs: opt-in only
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert pipeline.settled_stats()["billed"] == 12
    assert not any(r["reused"] for r in _export(pipeline, "third"))

    fresh = pipeline.imgmod("run", str(src), "--job", "fourth", "--reuse-urls", "--rescan")
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert pipeline.settled_stats()["billed"] == 18
    assert pipeline.results_per_item_max() == 1
