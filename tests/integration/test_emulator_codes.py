"""Every documented body code and every gateway error, driven over real HTTP."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Emulator, running_emulator
from worker.emulator import TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET, expected_answer
from worker.emulator.samples import sample_bytes_for_path, sample_image_bytes
from worker.signing import acs_date

pytestmark = pytest.mark.service

ALL_INFO = "customImage,textInImage,publicFigure,logoData"
NOPERM = "noperm-key:noperm-secret:noperm"
OSS_BYTES = sample_image_bytes(9, "png")


@pytest.fixture(scope="module")
def oss_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("oss")
    target = root / "cn-beijing" / "bucket_01" / "2022" / "a b.png"
    target.parent.mkdir(parents=True)
    target.write_bytes(OSS_BYTES)
    (root / "secret.png").write_bytes(OSS_BYTES)
    return root


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import hashlib

    path = tmp_path_factory.mktemp("rules") / "rules.json"
    pinned_sha = hashlib.sha256(sample_image_bytes(21, "png")).hexdigest()
    rules = [
        {"sha256": pinned_sha, "code": 405},
        {
            "url": "http://pinned.example/x.png",
            "data": {
                "Result": [{"Label": "violent_gun", "Confidence": 77.7, "RiskLevel": "high"}],
                "RiskLevel": "high",
            },
        },
        {"url_contains": "/force500/", "code": 500, "msg": "pinned failure"},
    ]
    path.write_text(json.dumps({"rules": rules}))
    return path


@pytest.fixture(scope="module")
def emu(oss_root: Path, rules_file: Path) -> Iterator[Emulator]:
    keys = [f"{TEST_ACCESS_KEY_ID}:{TEST_ACCESS_KEY_SECRET}", NOPERM]
    with running_emulator(
        qps=1000, download_timeout=1, oss_root=oss_root, rules=rules_file, keys=keys
    ) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def fresh(emu: Emulator) -> None:
    emu.configure(qps=1000, fault_500=0)
    emu.reset()


def _code(emu: Emulator, params: object, **kwargs: object) -> int:
    reply = emu.moderate(params, **kwargs)  # type: ignore[arg-type]
    assert reply.status == 200, reply.body
    body = reply.json()
    assert set(body) == (
        {"RequestId", "Code", "Msg", "Data"}
        if body["Code"] == 200
        else {"RequestId", "Code", "Msg"}
    )
    assert body["RequestId"] == body["RequestId"].upper()
    return int(body["Code"])


@pytest.mark.parametrize("ext", ["png", "jpg", "gif", "bmp", "webp"])
def test_a_served_image_gets_the_expected_answer_and_is_billed_once(emu, image_server, ext) -> None:
    url = image_server.image_url(4, ext)
    reply = emu.moderate({"imageUrl": url, "dataId": "img-4", "infoType": ALL_INFO})
    body = reply.json()
    assert reply.status == 200 and body["Code"] == 200 and body["Msg"] == "OK"
    assert body["Data"] == expected_answer(sample_image_bytes(4, ext), "img-4", ALL_INFO)
    stats = emu.stats()
    assert stats["billed"] == 1 and stats["billed_by_image"] == {url: 1}
    assert stats["by_code"] == {"200": 1}


def test_stats_tell_when_the_first_and_the_last_call_came(emu, image_server) -> None:
    """bench/throughput.py splits a job's wall time with these: start-up, calls, tail."""
    assert emu.stats()["first_call_at"] is None and emu.stats()["last_call_at"] is None
    before = time.time()
    for n in (1, 2):
        emu.moderate({"imageUrl": image_server.image_url(n, "png")})
    after = time.time()
    stats = emu.stats()
    assert before <= stats["first_call_at"] < stats["last_call_at"] <= after
    emu.reset()
    assert emu.stats()["first_call_at"] is None


def test_aigc_service_is_accepted(emu, image_server) -> None:
    assert _code(emu, {"imageUrl": image_server.image_url(1)}, service="aigcDetector_global") == 200


def test_an_oss_triple_reads_from_the_oss_root(emu) -> None:
    params = {
        "ossBucketName": "bucket_01",
        "ossObjectName": "2022/a b.png",
        "ossRegionId": "cn-beijing",
        "dataId": "o1",
    }
    body = emu.moderate(params).json()
    assert body["Data"] == expected_answer(OSS_BYTES, "o1", "")
    assert emu.stats()["billed_by_image"] == {"oss://cn-beijing/bucket_01/2022/a b.png": 1}


@pytest.mark.parametrize(
    ("params", "code"),
    [
        (
            {
                "ossBucketName": "bucket_01",
                "ossObjectName": "nope.png",
                "ossRegionId": "cn-beijing",
            },
            404,
        ),
        ({"ossBucketName": "..", "ossObjectName": "secret.png", "ossRegionId": "."}, 404),
    ],
)
def test_missing_or_escaping_oss_objects_are_download_errors(emu, params, code) -> None:
    assert _code(emu, params) == code


def test_parameter_codes_400_401_402(emu, image_server) -> None:
    url = image_server.image_url(1)
    assert _code(emu, {"imageUrl": url}, service="") == 400
    assert _code(emu, {"dataId": "x"}) == 400
    assert _code(emu, {"imageUrl": url}, service="nope") == 401
    assert _code(emu, {"imageUrl": "ftp://x/1.png"}) == 401
    assert _code(emu, {"imageUrl": url, "infoType": "bogus"}) == 401
    assert _code(emu, {"imageUrl": url, "dataId": "a b"}) == 401
    assert _code(emu, {"imageUrl": url + "?" + "a" * 2048}) == 402
    assert _code(emu, {"imageUrl": url, "dataId": "a" * 65}) == 402
    assert emu.stats()["billed"] == 0


def test_qps_over_the_cap_gets_403_and_is_not_billed(emu, image_server) -> None:
    emu.configure(qps=2)
    codes = [_code(emu, {"imageUrl": image_server.image_url(n)}) for n in range(6)]
    assert codes.count(403) >= 3 and set(codes) <= {200, 403}
    stats = emu.stats()
    assert stats["billed"] == codes.count(200)
    assert stats["by_code"]["403"] == codes.count(403)


def test_download_errors_are_404(emu, image_server) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    assert _code(emu, {"imageUrl": f"{image_server.url}/missing/1.png"}) == 404
    assert _code(emu, {"imageUrl": f"{image_server.url}/reset/1.png"}) == 404
    assert _code(emu, {"imageUrl": f"http://127.0.0.1:{closed_port}/1.png"}) == 404
    assert _code(emu, {"imageUrl": "http://no-such-host.invalid/1.png"}) == 404


def test_a_download_slower_than_the_timeout_is_405(emu, image_server) -> None:
    assert _code(emu, {"imageUrl": f"{image_server.url}/slow/1.png?ms=3000"}) == 405


def test_a_download_within_the_timeout_succeeds(emu, image_server) -> None:
    assert _code(emu, {"imageUrl": f"{image_server.url}/slow/1.png?ms=100"}) == 200


def test_too_large_images_are_406(emu, image_server) -> None:
    assert _code(emu, {"imageUrl": f"{image_server.url}/big/1.png"}) == 406
    assert _code(emu, {"imageUrl": f"{image_server.url}/wide/1.png"}) == 406


def test_a_non_image_is_407(emu, image_server) -> None:
    assert _code(emu, {"imageUrl": f"{image_server.url}/text/1.txt"}) == 407


def test_a_key_without_the_service_is_408(emu, image_server) -> None:
    reply = emu.moderate(
        {"imageUrl": image_server.image_url(1)}, key_id="noperm-key", secret="noperm-secret"
    )
    assert reply.json()["Code"] == 408


def test_fault_500_answers_code_500_unbilled(emu, image_server) -> None:
    emu.configure(fault_500=1)
    assert _code(emu, {"imageUrl": image_server.image_url(1)}) == 500
    assert emu.stats()["billed"] == 0


def test_rules_pin_codes_and_answers(emu, image_server) -> None:
    assert _code(emu, {"imageUrl": image_server.image_url(21)}) == 405
    assert _code(emu, {"imageUrl": f"{image_server.url}/force500/1.png"}) == 500
    body = emu.moderate({"imageUrl": "http://pinned.example/x.png", "dataId": "p"}).json()
    assert body["Code"] == 200
    assert body["Data"]["Result"][0]["Label"] == "violent_gun"
    assert body["Data"]["DataId"] == "p"
    assert emu.stats()["billed_by_image"] == {"http://pinned.example/x.png": 1}


def test_slow_path_bytes_match_the_pure_generator(emu, image_server) -> None:
    path = "/slow/5.png?ms=10"
    body = emu.moderate({"imageUrl": image_server.url + path, "infoType": ALL_INFO}).json()
    assert body["Data"] == expected_answer(sample_bytes_for_path(path), None, ALL_INFO)


# -- gateway errors ---------------------------------------------------------------------------


def _gateway(reply) -> tuple[int, str]:
    body = reply.json()
    assert set(body) == {"RequestId", "HostId", "Code", "Message", "Recommend"}
    assert TEST_ACCESS_KEY_SECRET not in reply.body.decode()
    return reply.status, body["Code"]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"secret": "wrong-secret"}, (400, "SignatureDoesNotMatch")),
        ({"key_id": "unknown-key"}, (404, "InvalidAccessKeyId.NotFound")),
        ({"date": acs_date(0)}, (400, "InvalidTimeStamp.Expired")),
        ({"action": "DescribeImageModeration"}, (404, "InvalidAction.NotFound")),
        ({"version": "2017-08-23"}, (404, "InvalidVersion")),
    ],
)
def test_gateway_errors_have_their_http_status_and_string_code(
    emu, image_server, kwargs, expected
) -> None:
    reply = emu.moderate({"imageUrl": image_server.image_url(1)}, **kwargs)
    assert _gateway(reply) == expected
    stats = emu.stats()
    assert stats["by_code"] == {expected[1]: 1} and stats["billed"] == 0


def test_a_replayed_nonce_is_refused(emu, image_server) -> None:
    params = {"imageUrl": image_server.image_url(1)}
    assert emu.moderate(params, nonce="fixed-nonce-1").json()["Code"] == 200
    assert _gateway(emu.moderate(params, nonce="fixed-nonce-1")) == (400, "SignatureNonceUsed")


def test_a_tampered_body_or_missing_authorization_is_refused(emu) -> None:
    import http.client

    from worker.signing import sign_moderation_request

    signed = sign_moderation_request(
        host=emu.endpoint,
        key_id=TEST_ACCESS_KEY_ID,
        secret=TEST_ACCESS_KEY_SECRET,
        fields={"Service": "baselineCheck_global", "ServiceParameters": "{}"},
    )
    host, port = emu.endpoint.split(":")
    for headers, body in (
        (signed.headers, signed.body + b"&x=1"),
        ({k: v for k, v in signed.headers.items() if k != "Authorization"}, signed.body),
    ):
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("POST", "/", body=body, headers=headers)
        response = conn.getresponse()
        data = json.loads(response.read())
        conn.close()
        assert (response.status, data["Code"]) == (400, "SignatureDoesNotMatch")
