"""The real OSS SDK (alibabacloud-oss-v2) and the real green SDK against the emulator's OSS:
what imgmod's lister and uploader will rely on, proven with the vendor's own clients."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import alibabacloud_oss_v2 as oss
import pytest
from alibabacloud_green20220302 import models
from alibabacloud_green20220302.client import Client as GreenClient
from alibabacloud_tea_openapi.utils_models import Config as GreenConfig

from tests.support import Emulator, running_emulator
from worker.emulator.samples import png_bytes

pytestmark = pytest.mark.service

REGION = "ap-southeast-1"
KEYS = [f"photos/{n:03d}.png" for n in range(23)] + ["photos/deep/x y+é.jpg", "other/1.png"]


def _write_bucket(root: Path) -> None:
    for n, key in enumerate(KEYS):
        path = root / REGION / "archive" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png_bytes(n))
    (root / REGION / "locked").mkdir(parents=True)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("oss")
    _write_bucket(folder)
    return folder


@pytest.fixture(scope="module")
def emu(root) -> Iterator[Emulator]:
    with running_emulator(
        oss_root=str(root),
        oss_synthetic="synthetic=2345",
        oss_deny_list="locked",
        upload_token_ttl=3,
    ) as emulator:
        yield emulator


def _client(
    emu: Emulator,
    key_id: str | None = None,
    secret: str | None = None,
    token: str | None = None,
    attempts: int | None = None,
    endpoint: str | None = None,
) -> oss.Client:
    cfg = oss.config.load_default()
    cfg.credentials_provider = oss.credentials.StaticCredentialsProvider(
        key_id or emu.access_key_id, secret or emu.access_key_secret, token
    )
    cfg.region = REGION
    cfg.endpoint = endpoint or emu.oss_url
    if attempts is not None:
        cfg.retry_max_attempts = attempts
    return oss.Client(cfg)


def _service_error(exc: BaseException) -> oss.exceptions.ServiceError:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, oss.exceptions.ServiceError):
            return seen
        seen = seen.__cause__ or (seen.unwrap() if hasattr(seen, "unwrap") else None)
        if seen is exc:
            break
    raise AssertionError(f"no ServiceError in {exc!r}")


def _list_all(
    client: oss.Client, bucket: str, **request
) -> tuple[list[oss.models.ObjectProperties], int]:
    objects, pages = [], 0
    paginator = client.list_objects_v2_paginator()
    for page in paginator.iter_page(oss.ListObjectsV2Request(bucket=bucket, **request)):
        objects += page.contents or []
        pages += 1
    return objects, pages


def test_the_sdk_lists_a_prefix_page_by_page_with_etag_size_and_date(emu) -> None:
    objects, pages = _list_all(_client(emu), "archive", prefix="photos/", max_keys=5)
    assert [o.key for o in objects] == sorted(k for k in KEYS if k.startswith("photos/"))
    assert pages == 5  # 24 objects, 5 a page
    body = png_bytes(KEYS.index("photos/deep/x y+é.jpg"))
    deep = next(o for o in objects if o.key == "photos/deep/x y+é.jpg")
    assert deep.etag == '"' + hashlib.md5(body).hexdigest().upper() + '"'
    assert deep.size == len(body)
    assert abs(deep.last_modified.timestamp() - time.time()) < 3600


def test_a_saved_continuation_token_resumes_without_duplicates_or_gaps(emu) -> None:
    client = _client(emu)
    first = client.list_objects_v2(oss.ListObjectsV2Request(bucket="archive", max_keys=10))
    assert first.is_truncated and first.key_count == 10 and first.next_continuation_token
    # a new client (a restarted lister) carries on from the saved token alone
    rest, _ = _list_all(
        _client(emu), "archive", continuation_token=first.next_continuation_token, max_keys=1000
    )
    assert [o.key for o in first.contents] + [o.key for o in rest] == sorted(KEYS)
    after, _ = _list_all(client, "archive", start_after="photos/020.png")
    assert [o.key for o in after] == [k for k in sorted(KEYS) if k > "photos/020.png"]


def test_a_delimiter_gives_common_prefixes(emu) -> None:
    result = _client(emu).list_objects_v2(
        oss.ListObjectsV2Request(bucket="archive", prefix="photos/", delimiter="/", max_keys=1000)
    )
    assert [p.prefix for p in result.common_prefixes] == ["photos/deep/"]
    assert len(result.contents) == 23


def test_head_get_and_put_round_trip(emu, root) -> None:
    client = _client(emu)
    head = client.head_object(oss.HeadObjectRequest(bucket="archive", key="photos/deep/x y+é.jpg"))
    body = png_bytes(KEYS.index("photos/deep/x y+é.jpg"))
    assert head.content_length == len(body)
    assert head.etag == '"' + hashlib.md5(body).hexdigest().upper() + '"'
    got = client.get_object(oss.GetObjectRequest(bucket="archive", key="photos/001.png"))
    assert got.body.read() == png_bytes(1)
    put = client.put_object(oss.PutObjectRequest(bucket="archive", key="new/é 1.png", body=b"abc"))
    assert put.etag == '"' + hashlib.md5(b"abc").hexdigest().upper() + '"'
    assert (root / REGION / "archive" / "new" / "é 1.png").read_bytes() == b"abc"
    with pytest.raises(Exception) as missing:
        client.head_object(oss.HeadObjectRequest(bucket="archive", key="photos/none.png"))
    assert _service_error(missing.value).status_code == 404


def test_a_put_whose_body_does_not_match_its_content_md5_is_refused_invalid_digest(
    emu, root
) -> None:
    client = _client(emu)
    good = base64.b64encode(hashlib.md5(b"abc").digest()).decode()
    put = client.put_object(
        oss.PutObjectRequest(bucket="archive", key="md5/ok.png", body=b"abc", content_md5=good)
    )
    assert put.hash_crc64 is not None  # answered, and the SDK's own CRC check accepted it
    with pytest.raises(Exception) as refused:
        client.put_object(
            oss.PutObjectRequest(bucket="archive", key="md5/bad.png", body=b"abd", content_md5=good)
        )
    error = _service_error(refused.value)
    assert (error.status_code, error.code) == (400, "InvalidDigest")
    assert not (root / REGION / "archive" / "md5" / "bad.png").exists()


def test_a_key_cannot_escape_the_bucket(emu, root) -> None:
    with pytest.raises(Exception) as refused:
        _client(emu).put_object(
            oss.PutObjectRequest(bucket="archive", key="../locked/evil.png", body=b"x")
        )
    # the path is normalised or refused: never a write outside the bucket
    assert _service_error(refused.value).status_code in (400, 403, 404)
    assert not (root / REGION / "locked" / "evil.png").exists()


def test_a_wrong_secret_is_refused_with_signature_does_not_match(emu) -> None:
    with pytest.raises(Exception) as refused:
        _client(emu, secret="not-the-secret").list_objects_v2(
            oss.ListObjectsV2Request(bucket="archive")
        )
    error = _service_error(refused.value)
    assert error.status_code == 403 and error.code == "SignatureDoesNotMatch"


def test_an_unknown_key_id_is_refused(emu) -> None:
    with pytest.raises(Exception) as refused:
        _client(emu, key_id="nobody").list_objects_v2(oss.ListObjectsV2Request(bucket="archive"))
    assert _service_error(refused.value).code == "InvalidAccessKeyId"


def test_a_bucket_denying_list_gives_access_denied_naming_the_permission(emu) -> None:
    with pytest.raises(Exception) as refused:
        _client(emu).list_objects_v2(oss.ListObjectsV2Request(bucket="locked"))
    error = _service_error(refused.value)
    assert error.status_code == 403 and error.code == "AccessDenied"
    assert "oss:ListObjects" in error.message and "locked" in error.message
    # only listing is denied: objects in the bucket can still be written and read
    _client(emu).put_object(oss.PutObjectRequest(bucket="locked", key="a.png", body=b"a"))


def test_the_deny_list_is_a_runtime_knob(emu) -> None:
    emu.configure(oss_deny_list=["archive"])
    try:
        with pytest.raises(Exception) as refused:
            _client(emu).list_objects_v2(oss.ListObjectsV2Request(bucket="archive"))
        assert _service_error(refused.value).code == "AccessDenied"
    finally:
        emu.configure(oss_deny_list=["locked"])
    assert _client(emu).list_objects_v2(oss.ListObjectsV2Request(bucket="archive")).key_count


@pytest.mark.parametrize(
    "fault,status",
    [("oss_list_fault_503", 503), ("oss_list_fault_500", 500), ("oss_list_fault_403", 403)],
)
def test_injected_list_faults_hit_the_next_n_list_requests(emu, fault, status) -> None:
    emu.configure(**{fault: 1})
    with pytest.raises(Exception) as refused:
        _client(emu, attempts=1).list_objects_v2(oss.ListObjectsV2Request(bucket="archive"))
    assert _service_error(refused.value).status_code == status
    # consumed: the next list answers
    assert (
        _client(emu, attempts=1)
        .list_objects_v2(oss.ListObjectsV2Request(bucket="archive"))
        .key_count
    )


def test_a_reset_list_is_retried_by_the_sdk_and_counted(emu) -> None:
    before = emu.stats()["oss"].get("list_fault_reset", 0)
    emu.configure(oss_list_fault_reset=2)
    result = _client(emu, attempts=3).list_objects_v2(oss.ListObjectsV2Request(bucket="archive"))
    assert result.key_count
    assert emu.stats()["oss"]["list_fault_reset"] == before + 2


def test_a_synthetic_bucket_lists_and_serves_generated_pngs(emu) -> None:
    objects, pages = _list_all(_client(emu), "synthetic", max_keys=1000)
    assert len(objects) == 2345 and pages == 3
    assert objects[0].key == "img/000000000.png" and objects[-1].key == "img/000002344.png"
    got = _client(emu).get_object(oss.GetObjectRequest(bucket="synthetic", key="img/000000007.png"))
    assert got.body.read() == png_bytes(7)
    answer = emu.moderate(
        {"ossBucketName": "synthetic", "ossObjectName": "img/000000007.png", "ossRegionId": REGION}
    )
    assert answer.json()["Code"] == 200


def _green(emu: Emulator) -> GreenClient:
    return GreenClient(
        GreenConfig(
            access_key_id=emu.access_key_id,
            access_key_secret=emu.access_key_secret,
            endpoint=emu.endpoint,
            protocol="HTTP",
        )
    )


def _upload_token(emu: Emulator) -> models.DescribeUploadTokenResponseBodyData:
    response = _green(emu).describe_upload_token()
    assert response.status_code == 200 and response.body.code == 200
    return response.body.data


def test_describe_upload_token_then_sts_put_then_moderate_the_triple(emu) -> None:
    billed = emu.stats()["billed"]
    data = _upload_token(emu)
    assert emu.stats()["billed"] == billed  # a token is not a billed call
    assert data.access_key_id.startswith("STS.") and data.security_token
    assert data.oss_internet_end_point == emu.oss_url == data.oss_internal_end_point
    assert data.expiration > time.time()
    client = _client(
        emu,
        data.access_key_id,
        data.access_key_secret,
        data.security_token,
        endpoint=data.oss_internet_end_point,
    )
    key = data.file_name_prefix + "cat.png"
    client.put_object(oss.PutObjectRequest(bucket=data.bucket_name, key=key, body=png_bytes(42)))
    answer = emu.moderate(
        {"ossBucketName": data.bucket_name, "ossObjectName": key, "ossRegionId": REGION}
    )
    assert answer.json()["Code"] == 200
    # the token grants its prefix only, and no listing
    with pytest.raises(Exception) as outside:
        client.put_object(
            oss.PutObjectRequest(bucket=data.bucket_name, key="elsewhere.png", body=b"x")
        )
    assert _service_error(outside.value).code == "AccessDenied"
    with pytest.raises(Exception) as wrong_token:
        _client(emu, data.access_key_id, data.access_key_secret, "forged").put_object(
            oss.PutObjectRequest(bucket=data.bucket_name, key=key, body=b"x")
        )
    assert _service_error(wrong_token.value).code == "InvalidSecurityToken"


def test_an_sts_put_with_an_expired_token_is_refused(emu) -> None:
    data = _upload_token(emu)  # the fixture's tokens live 3 s
    client = _client(emu, data.access_key_id, data.access_key_secret, data.security_token)
    key = data.file_name_prefix + "late.png"
    deadline = time.monotonic() + 10
    while time.time() < data.expiration:  # a clock deadline, not synchronisation with a process
        assert time.monotonic() < deadline
        time.sleep(0.1)
    with pytest.raises(Exception) as refused:
        client.put_object(oss.PutObjectRequest(bucket=data.bucket_name, key=key, body=b"x"))
    assert _service_error(refused.value).code == "SecurityTokenExpired"
