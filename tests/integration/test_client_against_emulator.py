"""The client over real HTTP against the emulator: every outcome class, parsed and classified."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.support import running_emulator
from worker import errors
from worker.client import ModerationClient
from worker.emulator import TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET, expected_answer
from worker.emulator.samples import sample_bytes_for_path
from worker.params import validate_ref
from worker.settings import Credentials

pytestmark = pytest.mark.service

SERVICE = "baselineCheck_global"
CREDS = Credentials(TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET)


@pytest.fixture(scope="module")
def emu() -> Iterator[object]:
    with running_emulator(qps=1000, download_timeout=1.0, slow_ms=3000) as e:
        yield e


@pytest.fixture
def client(emu) -> Iterator[ModerationClient]:
    emu.configure(
        fault_405=0,
        fault_500=0,
        fault_reset=0,
        fault_slow=0,
        fault_malformed=0,
        fault_gateway_5xx=0,
        qps=1000,
    )
    c = ModerationClient(emu.url, CREDS, connect_timeout=2, read_timeout=2, pool_size=8)
    yield c
    c.close()


def test_a_good_image_is_parsed_into_typed_results(client, image_server) -> None:
    url = image_server.image_url(7, "jpg")
    info = "customImage,textInImage,publicFigure,logoData"
    response = client.moderate(SERVICE, validate_ref(image_url=url, data_id="img-7"), info)

    expected = expected_answer(sample_bytes_for_path(urlsplit(url).path), "img-7", info)
    assert response.ok and response.code == 200 and response.request_id
    assert response.raw["Data"] == expected
    assert response.data is not None and response.data.data_id == "img-7"
    assert response.data.risk_level == expected["RiskLevel"]
    assert [lab.label for lab in response.data.result] == [r["Label"] for r in expected["Result"]]


@pytest.mark.parametrize(
    ("path", "error", "code"),
    [
        ("/missing/1.png", errors.DownloadFailed, 404),
        ("/slow/1.png?ms=2500", errors.DownloadTimeout, 405),
        ("/big/1.png", errors.ImageTooLarge, 406),
        ("/wide/1.png", errors.ImageTooLarge, 406),
        ("/text/1.txt", errors.UnsupportedFormat, 407),
    ],
)
def test_documented_codes_raise_their_own_error(client, image_server, path, error, code) -> None:
    with pytest.raises(error) as info:
        client.moderate(SERVICE, validate_ref(image_url=image_server.url + path))
    assert info.value.code == code and info.value.request_id
    assert info.value.retryable is (code in (404, 405))  # 404: one retry by default


def test_wrong_secret_is_a_terminal_auth_error_without_the_secret(emu, image_server) -> None:
    bad = ModerationClient(emu.url, Credentials(TEST_ACCESS_KEY_ID, "not-the-secret-xyz"))
    with pytest.raises(errors.AuthError) as info:
        bad.moderate(SERVICE, validate_ref(image_url=image_server.image_url(1)))
    assert info.value.code == "SignatureDoesNotMatch" and not info.value.retryable
    assert "not-the-secret-xyz" not in str(info.value) + repr(info.value) + repr(bad)


def test_unknown_key_is_a_terminal_auth_error(emu, image_server) -> None:
    bad = ModerationClient(emu.url, Credentials("nobody", "x"))
    with pytest.raises(errors.AuthError) as info:
        bad.moderate(SERVICE, validate_ref(image_url=image_server.image_url(1)))
    assert str(info.value.code).startswith("InvalidAccessKeyId")


def test_over_the_cap_is_throttled_and_retryable(emu, client, image_server) -> None:
    emu.configure(qps=1)
    ref = validate_ref(image_url=image_server.image_url(2))
    with pytest.raises(errors.Throttled) as info:
        for _ in range(3):  # at most one call of these fits in any one-second window
            client.moderate(SERVICE, ref)
    assert info.value.code == 403 and info.value.retryable


@pytest.mark.parametrize(
    ("knob", "error", "code"),
    [
        ("fault_500", errors.ServiceError, 500),
        ("fault_405", errors.DownloadTimeout, 405),
        ("fault_gateway_5xx", errors.ServiceError, None),  # code "HTTP 502" or "HTTP 503"
        ("fault_reset", errors.TransportError, "connection"),
        ("fault_malformed", errors.TransportError, "malformed"),
        ("fault_slow", errors.TransportError, "timeout"),
    ],
)
def test_injected_faults_are_retryable_errors(emu, client, image_server, knob, error, code) -> None:
    emu.configure(**{knob: 1.0})
    with pytest.raises(error) as info:
        client.moderate(SERVICE, validate_ref(image_url=image_server.image_url(3)))
    assert info.value.retryable
    if code is not None:
        assert info.value.code == code


def test_every_attempt_signs_with_a_fresh_nonce(emu, client, image_server) -> None:
    """Two identical calls in the same second: a reused nonce would be refused."""
    ref = validate_ref(image_url=image_server.image_url(4))
    assert client.moderate(SERVICE, ref).ok
    assert client.moderate(SERVICE, ref).ok


def test_sts_token_is_sent_and_accepted(emu, image_server) -> None:
    sts = ModerationClient(emu.url, Credentials(TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET, "tok"))
    assert sts.moderate(SERVICE, validate_ref(image_url=image_server.image_url(5))).ok
