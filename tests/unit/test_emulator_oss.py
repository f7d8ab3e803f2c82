"""The emulator's OSS pieces as pure functions: the V4 check against the SDK's own signer, the
listing's pages and tokens, keys that must not leave a bucket, and the runtime knobs."""

from __future__ import annotations

import base64
import hashlib
import time
from pathlib import Path

import pytest
from alibabacloud_oss_v2.credentials import Credentials
from alibabacloud_oss_v2.signer import SignerV4
from alibabacloud_oss_v2.types import HttpRequest, SigningContext

from worker.emulator.oss import OssKnobs, list_xml, updated_oss_knobs
from worker.emulator.oss_auth import OssError, Signed, TokenRegistry, authenticate_oss
from worker.emulator.oss_store import (
    ObjectStore,
    crc64ecma,
    decode_token,
    digest_error,
    encode_token,
    parse_synthetic,
)

REGION = "ap-southeast-1"
SECRETS = {"AKID": "the-secret"}


def _sdk_signed(
    method: str,
    bucket: str,
    key: str | None,
    query: str,
    secret: str = "the-secret",
    token: str | None = None,
    key_id: str = "AKID",
    region: str = REGION,
) -> dict[str, str]:
    path = f"/{bucket}/" + (key or "")
    from urllib.parse import quote

    request = HttpRequest(
        method, f"http://127.0.0.1:1{quote(path)}" + (f"?{query}" if query else "")
    )
    request.headers.update({"Content-Type": "application/octet-stream"})
    SignerV4().sign(
        SigningContext(
            product="oss",
            region=region,
            bucket=bucket,
            key=key,
            request=request,
            credentials=Credentials(key_id, secret, token),
        )
    )
    return {name.lower(): value for name, value in request.headers.items()}


def _check(
    headers,
    method="GET",
    bucket="bkt",
    key=None,
    query="list-type=2&max-keys=5",
    tokens=None,
    now=None,
):
    return authenticate_oss(
        method=method,
        bucket=bucket,
        key=key,
        raw_query=query,
        headers=headers,
        secrets_by_id=SECRETS,
        tokens=tokens or TokenRegistry(60),
        region=REGION,
        now=now if now is not None else time.time(),
    )


def test_a_request_signed_by_the_sdk_signer_passes() -> None:
    headers = _sdk_signed("GET", "bkt", None, "list-type=2&max-keys=5")
    assert _check(headers) == Signed("AKID")
    put = _sdk_signed("PUT", "bkt", "dir/é x+y.png", "")
    assert _check(put, method="PUT", key="dir/é x+y.png", query="") == Signed("AKID")


@pytest.mark.parametrize(
    "change",
    [
        {"secret": "wrong"},
        {"query": "list-type=2&max-keys=6"},  # a tampered query
        {"method": "DELETE"},
    ],
)
def test_any_difference_fails_the_signature(change) -> None:
    headers = _sdk_signed(
        "GET", "bkt", None, "list-type=2&max-keys=5", secret=change.get("secret", "the-secret")
    )
    result = _check(
        headers,
        method=change.get("method", "GET"),
        query=change.get("query", "list-type=2&max-keys=5"),
    )
    assert isinstance(result, OssError) and result.code == "SignatureDoesNotMatch"


def test_a_stale_date_a_wrong_region_and_no_authorization_are_refused() -> None:
    headers = _sdk_signed("GET", "bkt", None, "")
    stale = _check(headers, query="", now=time.time() + 3600)
    assert isinstance(stale, OssError) and stale.code == "RequestTimeTooSkewed"
    other = _check(_sdk_signed("GET", "bkt", None, "", region="cn-shanghai"), query="")
    assert isinstance(other, OssError) and "ap-southeast-1" in other.message
    anonymous = _check({}, query="")
    assert isinstance(anonymous, OssError) and anonymous.code == "AccessDenied"


def test_sts_keys_need_their_token_and_expire() -> None:
    tokens = TokenRegistry(ttl=10)
    now = time.time()
    sts = tokens.issue("uploads", "p/", now)
    assert sts.secret not in repr(sts) and sts.token not in repr(sts)
    good = _sdk_signed(
        "PUT", "uploads", "p/a.png", "", secret=sts.secret, token=sts.token, key_id=sts.key_id
    )
    assert _check(
        good, method="PUT", bucket="uploads", key="p/a.png", query="", tokens=tokens, now=now
    ) == Signed(sts.key_id, sts)
    expired = _check(
        good,
        method="PUT",
        bucket="uploads",
        key="p/a.png",
        query="",
        tokens=tokens,
        now=sts.expires + 1,
    )
    assert isinstance(expired, OssError) and expired.code == "SecurityTokenExpired"
    forged = _sdk_signed(
        "PUT", "uploads", "p/a.png", "", secret=sts.secret, token="forged", key_id=sts.key_id
    )
    wrong = _check(
        forged, method="PUT", bucket="uploads", key="p/a.png", query="", tokens=tokens, now=now
    )
    assert isinstance(wrong, OssError) and wrong.code == "InvalidSecurityToken"


def _dir_store(tmp_path: Path, keys: list[str]) -> ObjectStore:
    for key in keys:
        path = tmp_path / REGION / "bkt" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(key.encode())
    return ObjectStore(tmp_path, REGION, {"synth": 10_000})


def test_pages_chained_by_tokens_cover_every_key_once(tmp_path) -> None:
    keys = sorted([f"a/{n:02d}.png" for n in range(17)] + ["b/1.png", "a/sub/x.png"])
    store = _dir_store(tmp_path, keys)
    seen, token = [], None
    while True:
        page = store.list_page("bkt", "a/", "", "", token, 4)
        seen += [o.key for o in page.contents]
        if not page.truncated:
            break
        token = decode_token(page.next_token)
    assert seen == [k for k in keys if k.startswith("a/")]


def test_a_delimiter_folds_a_folder_into_one_prefix_across_pages(tmp_path) -> None:
    keys = ["a/1.png", "a/sub/1.png", "a/sub/2.png", "a/sub/3.png", "a/z.png"]
    store = _dir_store(tmp_path, keys)
    first = store.list_page("bkt", "a/", "/", "", None, 2)
    assert [o.key for o in first.contents] == ["a/1.png"] and first.common_prefixes == ("a/sub/",)
    second = store.list_page("bkt", "a/", "/", "", decode_token(first.next_token), 2)
    assert [o.key for o in second.contents] == ["a/z.png"] and second.common_prefixes == ()


def test_a_synthetic_bucket_pages_from_the_middle_without_walking_it() -> None:
    store = ObjectStore(Path("/nonexistent"), REGION, {"synth": 1_000_000})
    token = (f"img/{999_997:09d}.png", False)
    started = time.perf_counter()
    page = store.list_page("synth", "", "", "", token, 1000)
    assert time.perf_counter() - started < 0.5
    assert [o.key for o in page.contents] == ["img/000999998.png", "img/000999999.png"]
    assert not page.truncated


def test_keys_cannot_leave_the_bucket(tmp_path) -> None:
    store = _dir_store(tmp_path, ["a.png"])
    for key in ("../other/x", "a/../../x", "/etc/passwd", "..", "a\x00b", ""):
        assert store.object_path("bkt", key) is None, key
    assert store.put("bkt", "../escape.png", b"x") is None
    assert not (tmp_path / REGION / "escape.png").exists()


def test_tokens_round_trip_and_garbage_is_refused() -> None:
    assert decode_token(encode_token("dir/é.png", True)) == ("dir/é.png", True)
    assert decode_token("!!!not-base64") is None


def test_list_xml_url_encodes_names_when_asked(tmp_path) -> None:
    store = _dir_store(tmp_path, ["a b/&é.png"])
    page = store.list_page("bkt", "", "", "", None, 10)
    encoded = list_xml("bkt", {"encoding-type": "url"}, 10, page).decode()
    assert "<Key>a%20b/%26%C3%A9.png</Key>" in encoded and "<KeyCount>1</KeyCount>" in encoded
    plain = list_xml("bkt", {}, 10, page).decode()
    assert "<Key>a b/&amp;é.png</Key>" in plain and "&quot;" in plain


def test_knobs_and_synthetic_option_validate() -> None:
    knobs = updated_oss_knobs(OssKnobs(), {"oss_deny_list": ["b"], "oss_list_fault_503": 2})
    assert knobs.oss_deny_list == ("b",) and knobs.oss_list_fault_503 == 2
    for bad in (
        {"oss_list_fault_503": -1},
        {"oss_list_fault_500": 0.5},
        {"oss_deny_list": "b"},
        {"nope": 1},
    ):
        with pytest.raises(ValueError):
            updated_oss_knobs(OssKnobs(), bad)
    assert parse_synthetic("big=1000000") == ("big", 1_000_000)
    for bad in ("big", "B=1", "big=x"):
        with pytest.raises(ValueError):
            parse_synthetic(bad)


def test_put_digests_are_checked_like_oss_when_sent() -> None:
    body = b"the bytes of an image"
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    assert digest_error(body, None, None) is None
    assert digest_error(body, md5, str(crc64ecma(body))) is None
    for wrong in (
        digest_error(body + b"!", md5, None),  # the body changed on the way
        digest_error(body, "not base64", None),  # a malformed header is refused the same way
        digest_error(body, base64.b64encode(b"short").decode(), None),
        digest_error(body, None, str(crc64ecma(body) ^ 1)),
        digest_error(body, None, "12x"),
    ):
        assert wrong is not None and (wrong.status, wrong.code) == (400, "InvalidDigest")


def test_crc64ecma_is_the_one_the_sdk_computes() -> None:
    from alibabacloud_oss_v2.crc import Crc64

    crc = Crc64(0)
    crc.update(b"hello world")
    assert crc64ecma(b"hello world") == crc.sum64()
