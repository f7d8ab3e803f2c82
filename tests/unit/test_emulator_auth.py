"""Gateway checks over requests signed by worker.signing: each refusal has its vendor code."""

from __future__ import annotations

import dataclasses

import pytest

from worker.emulator import TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET
from worker.emulator.auth import (
    AccessKey,
    GatewayError,
    NonceLedger,
    authenticate,
    lower_headers,
    parse_acs_date,
    parse_key_option,
)
from worker.signing import acs_date, sign_moderation_request

HOST = "127.0.0.1:8080"
NOW = 1_800_000_000.0
KEY = AccessKey(TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET)
KEYS = {KEY.key_id: KEY}
FIELDS = {"Service": "baselineCheck_global", "ServiceParameters": '{"imageUrl":"http://x/1.png"}'}


def _check(
    secret: str = TEST_ACCESS_KEY_SECRET,
    key_id: str = TEST_ACCESS_KEY_ID,
    body: bytes | None = None,
    mutate=None,
    **sign,
) -> AccessKey | GatewayError:
    signed = sign_moderation_request(
        host=HOST,
        key_id=key_id,
        secret=secret,
        fields=FIELDS,
        date=acs_date(sign.pop("now", NOW)),
        **sign,
    )
    headers = lower_headers(list(signed.headers.items()))
    if mutate:
        mutate(headers)
    return authenticate(
        method="POST",
        path="/",
        query={},
        headers=headers,
        body=signed.body if body is None else body,
        keys=KEYS,
        now=NOW,
    )


def _code(result: AccessKey | GatewayError) -> tuple[int, str] | str:
    return (result.status, result.code) if isinstance(result, GatewayError) else "ok"


def test_a_correctly_signed_call_passes_with_its_key() -> None:
    assert _check() == KEY


def test_an_sts_call_passes_when_the_accesskey_header_matches() -> None:
    assert _check(security_token="sts-token") == KEY


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"secret": "wrong"}, (400, "SignatureDoesNotMatch")),
        ({"key_id": "nobody"}, (404, "InvalidAccessKeyId.NotFound")),
        ({"action": "ImageModerationX"}, (404, "InvalidAction.NotFound")),
        ({"version": "2017-08-23"}, (404, "InvalidVersion")),
        ({"now": NOW - 16 * 60}, (400, "InvalidTimeStamp.Expired")),
        ({"now": NOW + 16 * 60}, (400, "InvalidTimeStamp.Expired")),
        ({"body": b"Service=other"}, (400, "SignatureDoesNotMatch")),
    ],
)
def test_each_gateway_refusal_has_its_status_and_code(kwargs, expected) -> None:
    assert _code(_check(**kwargs)) == expected


def test_clock_skew_within_15_minutes_is_accepted() -> None:
    assert _check(now=NOW - 14 * 60) == KEY


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda h: h.pop("authorization"), (400, "SignatureDoesNotMatch")),
        (lambda h: h.update(authorization="Bearer abc"), (400, "SignatureDoesNotMatch")),
        (lambda h: h.pop("x-acs-action"), (404, "InvalidAction.NotFound")),
        (lambda h: h.pop("x-acs-version"), (404, "InvalidVersion")),
        (lambda h: h.update({"x-acs-date": "yesterday"}), (400, "InvalidTimeStamp.Format")),
        (lambda h: h.update(host="evil:1"), (400, "SignatureDoesNotMatch")),
        (lambda h: h.update({"x-acs-extra": "1"}), (400, "SignatureDoesNotMatch")),
    ],
)
def test_tampered_or_missing_headers_are_refused(mutate, expected) -> None:
    assert _code(_check(mutate=mutate)) == expected


def test_refusal_messages_never_contain_the_secret() -> None:
    for result in (_check(secret="wrong"), _check(body=b"x"), _check(now=NOW - 3600)):
        assert isinstance(result, GatewayError)
        assert TEST_ACCESS_KEY_SECRET not in result.message


def test_access_key_repr_hides_the_secret() -> None:
    assert TEST_ACCESS_KEY_SECRET not in repr(KEY)
    assert TEST_ACCESS_KEY_SECRET not in repr(dataclasses.astuple(KEY)[:1])


def test_nonce_is_refused_when_replayed_within_15_minutes_and_forgotten_after() -> None:
    ledger = NonceLedger()
    assert ledger.claim("n1", NOW)
    assert not ledger.claim("n1", NOW + 899)
    assert ledger.claim("n1", NOW + 901)


def test_nonce_memory_expires_old_entries() -> None:
    ledger = NonceLedger(ttl=10)
    for i in range(1000):
        ledger.claim(f"n{i}", NOW + i * 0.01)
    ledger.claim("late", NOW + 100)
    assert len(ledger) == 1


def test_nonce_memory_has_a_hard_capacity() -> None:
    ledger = NonceLedger(capacity=100)
    for i in range(1000):
        ledger.claim(f"n{i}", NOW)
    assert len(ledger) == 100


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("id:secret", AccessKey("id", "secret")),
        ("id:secret:noperm", AccessKey("id", "secret", activated=False)),
        ("id:se:cret", AccessKey("id", "se:cret")),
    ],
)
def test_key_options_parse(value: str, expected: AccessKey) -> None:
    assert parse_key_option(value) == expected


@pytest.mark.parametrize("value", ["id", "id:", ":secret"])
def test_bad_key_options_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="ID:SECRET"):
        parse_key_option(value)


def test_acs_date_round_trips() -> None:
    assert parse_acs_date(acs_date(NOW)) == NOW
    assert parse_acs_date("2026-13-01T00:00:00Z") is None
