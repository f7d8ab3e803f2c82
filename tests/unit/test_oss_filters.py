"""OSS prefixes without services: which listed objects become rows (filters, rejected sizes),
and the page-by-page listing's resume against a scripted page source into a real SQLite store.

The page source stands in for OSS only here; tests/integration/test_oss_prefix.py runs the real
SDK against the emulator.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from alibabacloud_oss_v2 import exceptions as oss_exc

from worker import oss, producer, store
from worker.oss import ObjectInfo
from worker.sources import InputError, check_input
from worker.sources.oss_prefix import (
    KEEP,
    SKIP,
    Filters,
    ListedObject,
    RejectedObject,
    decide,
    page_records,
    parse_prefix,
)
from worker.sources.records import Defaults

T0 = datetime(2025, 11, 1, tzinfo=timezone.utc)
MB = 1024 * 1024


def obj(key: str, size: int = 1000, modified: datetime = T0) -> ObjectInfo:
    return ObjectInfo(key, size, "D41D8CD98F00B204E9800998ECF8427E", modified)


@pytest.mark.parametrize(
    "key",
    ["a.png", "b/c.JPG", "x.jpeg", "y.Bmp", "z.webp", "t.TIFF", "s.svg", "h.heif", "h.HEIC"]
    + ["g.gif", "i.ico"],
)
def test_default_keeps_the_vendors_image_extensions_in_any_case(key):
    assert decide(obj(key), Filters()) == KEEP


@pytest.mark.parametrize("key", ["notes.txt", "video.mp4", "noext", "dir/", "archive.png.zip"])
def test_default_skips_other_objects(key):
    assert decide(obj(key), Filters()) == SKIP


def test_include_replaces_the_default_and_exclude_drops():
    include = Filters(include=("*.dat", "raw/*"))
    assert decide(obj("x/photo.dat"), include) == KEEP  # no '/': the last segment
    assert decide(obj("raw/deep/blob"), include) == KEEP  # with '/': the whole key
    assert decide(obj("x/photo.png"), include) == SKIP
    exclude = Filters(exclude=("thumbs/*", "*.gif"))
    assert decide(obj("thumbs/a.png"), exclude) == SKIP
    assert decide(obj("a/b.gif"), exclude) == SKIP
    assert decide(obj("a/b.png"), exclude) == KEEP


def test_modified_since_skips_older_objects():
    since = Filters(modified_since=T0)
    assert decide(obj("old.png", modified=T0 - timedelta(seconds=1)), since) == SKIP
    assert decide(obj("new.png", modified=T0), since) == KEEP


def test_empty_and_oversized_objects_are_rejected_with_the_reason():
    assert decide(obj("e.png", size=0), Filters()) == "the object is empty (0 bytes)"
    assert decide(obj("ok.png", size=20 * MB), Filters()) == KEEP
    reason = decide(obj("big.png", size=20 * MB + 1), Filters())
    assert "over the vendor's 20 MB limit" in reason


def test_page_records_carry_the_listing_and_reject_with_the_objects_identity():
    prefix = parse_prefix("oss://my-bucket/in/")
    objects = (obj("in/a.png"), obj("in/b.txt"), obj("in/c.png", size=0))
    records, skipped = page_records(prefix, objects, 7, Filters(), Defaults("cn-shanghai", None))
    assert skipped == 1
    good, bad = records
    assert isinstance(good, ListedObject) and isinstance(bad, RejectedObject)
    assert (good.ref.oss_bucket, good.ref.oss_object, good.ref.oss_region) == (
        "my-bucket",
        "in/a.png",
        "cn-shanghai",
    )
    assert (good.etag, good.size, good.last_modified, good.line) == (
        "D41D8CD98F00B204E9800998ECF8427E",
        1000,
        T0,
        7,
    )
    # the same object at another position of a re-listing is the same rejected row
    again, _ = page_records(prefix, objects[2:], 1, Filters(), Defaults("cn-shanghai", None))
    assert again[0].identity == bad.identity and again[0].line != bad.line


@pytest.mark.parametrize("path", ["oss://", "oss://A_B/x", "oss://ab", "oss://x/" + "k" * 1024])
def test_a_malformed_prefix_is_refused_naming_the_path(path):
    with pytest.raises(InputError, match="oss://"):
        check_input(path)


def test_filters_fingerprint_tells_listings_apart():
    assert Filters().fingerprint() == ""
    assert Filters(include=("*.png",)).fingerprint() != Filters(exclude=("*.png",)).fingerprint()


def test_endpoint_options_path_style_for_an_ip_and_refusals():
    assert oss.endpoint_options("http://127.0.0.1:9000", False)["use_path_style"] is True
    assert (
        oss.endpoint_options("https://oss-cn-hangzhou.aliyuncs.com", False)["use_path_style"]
        is False
    )
    with pytest.raises(oss.OssEndpointInvalid, match="plain http"):
        oss.endpoint_options("http://oss.example.com", False)
    with pytest.raises(oss.OssEndpointInvalid, match="needs a scheme"):
        oss.endpoint_options("127.0.0.1:9000", False)


class ScriptedBucket:
    """ListObjectsV2 over ``keys`` in pages; ``fail_at`` page indexes raise ``error`` once."""

    def __init__(self, keys: list[str], page: int, fail_at: dict[int, Exception]) -> None:
        self.keys, self.page, self.fail_at, self.calls = keys, page, dict(fail_at), 0

    def invoke_operation(self, op_input):
        """What the SDK's transport returns for ListObjectsV2: the raw XML answer."""
        start = int(op_input.parameters.get("continuation-token") or 0)
        index = start // self.page
        self.calls += 1
        if index in self.fail_at:
            raise self.fail_at.pop(index)
        chunk = self.keys[start : start + self.page]
        end = start + len(chunk)
        body = "".join(
            f"<Contents><Key>{quote(k)}</Key><LastModified>2024-01-02T03:04:05.000Z"
            '</LastModified><ETag>"E"</ETag><Size>10</Size></Contents>'
            for k in chunk
        )
        more = end < len(self.keys)
        token = f"<NextContinuationToken>{end}</NextContinuationToken>" if more else ""
        xml = (
            f"<ListBucketResult><EncodingType>url</EncodingType>{body}"
            f"<IsTruncated>{str(more).lower()}</IsTruncated>{token}</ListBucketResult>"
        )
        return SimpleNamespace(http_response=SimpleNamespace(content=xml.encode()))


def service_error(status: int) -> Exception:
    return oss_exc.OperationError(
        name="ListObjectsV2",
        error=oss_exc.ServiceError(
            status_code=status,
            code="X",
            request_id="r",
            message="m",
            ec="",
            timestamp="",
            request_target="",
        ),
    )


@pytest.fixture
def engine(sqlite_url):
    store.upgrade(sqlite_url)
    engine = store.make_engine(sqlite_url)
    yield engine
    engine.dispose()


def run_listing(engine, bucket, job, summary=None):
    listing = producer.Listing(lambda region: bucket, "cn-hangzhou", page_size=bucket.page)
    producer.enqueue_prefix(
        engine,
        job,
        "oss://bkt/p/",
        lambda: 0,
        listing,
        Defaults(None, None),
        summary or producer.EnqueueSummary(),
    )


def rows(engine, job):
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(store.items.c.oss_object).where(store.items.c.job_id == job.id)
            ).scalars()
        )


def test_a_listing_stopped_midway_resumes_without_gap_or_duplicate(engine, monkeypatch):
    monkeypatch.setattr(oss, "listing_delay", lambda attempt: 0.0)
    keys = [f"p/{i:04d}.png" for i in range(25)]
    job = store.get_or_create_job(engine, "j", "baselineCheck_global", "")
    denied = ScriptedBucket(keys, 4, {3: service_error(403)})
    with pytest.raises(oss.OssListDenied, match=r"oss:ListObjects.*'bkt'"):
        run_listing(engine, denied, job)
    assert len(rows(engine, job)) == 12  # three pages stored, the fourth refused
    # resumed: starts from the saved token, retries a 503 and a reset connection on the way
    flaky = ScriptedBucket(
        keys, 4, {3: service_error(503), 5: oss_exc.RequestError(error=ConnectionResetError())}
    )
    run_listing(engine, flaky, job)
    stored = rows(engine, job)
    assert sorted(stored) == keys and len(stored) == len(set(stored))
    assert flaky.calls == 6  # pages 3..6 plus two retries: no page listed again
    state = store.get_listing(engine, job.id, "oss://bkt/p/")
    assert state is not None and state.done and state.listed == 25


def test_transient_faults_give_up_after_the_attempts_with_advice(monkeypatch):
    sleeps: list[float] = []
    bucket = ScriptedBucket(["a.png"], 1, {})
    bucket.invoke_operation = lambda op_input: (_ for _ in ()).throw(service_error(500))
    with pytest.raises(oss.OssListingFailed, match="run the same command again"):
        oss.list_page(bucket, "bkt", "", None, attempts=4, sleep=sleeps.append)
    assert sleeps == [0.5, 1.0, 2.0]


def test_a_listing_page_is_read_from_the_raw_answer_with_keys_decoded():
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult><Name>b</Name>'
        b"<EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>"
        b"<Contents><Key>a%20b/%E5%9B%BE%2B1.png</Key>"
        b"<LastModified>2024-01-02T03:04:05.000Z</LastModified>"
        b'<ETag>"5B0D"</ETag><Size>42</Size></Contents>'
        b'<Contents><Key>c.png</Key><ETag>"X"</ETag><Size>0</Size></Contents>'
        b"<NextContinuationToken>next%2Fone</NextContinuationToken></ListBucketResult>"
    )
    page = oss.parse_list_body(body, "b")
    assert page.objects == (
        ObjectInfo(
            "a b/\u56fe+1.png", 42, "5B0D", datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
        ),
        ObjectInfo("c.png", 0, "X", None),
    )
    assert page.next_token == "next/one"
    last = oss.parse_list_body(
        b"<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>", "b"
    )
    assert last == oss.Page((), None)


@pytest.mark.parametrize("body", [b"<html>gateway</html>", b"<ListBucketResult><Contents>"])
def test_an_answer_that_is_not_a_listing_is_one_error_naming_the_bucket(body):
    with pytest.raises(oss.OssListingUnreadable, match="oss://b: .*IMGMOD_OSS_ENDPOINT"):
        oss.parse_list_body(body, "b")
