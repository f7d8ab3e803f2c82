"""Our ACS3-HMAC-SHA256 signer must agree, byte for byte, with the official SDK's own utility."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from worker import signing

sdk_utils = pytest.importorskip("alibabacloud_tea_openapi.utils")
SdkUtils = sdk_utils.Utils

FIELDS = {
    "Service": "baselineCheck_global",
    "ServiceParameters": json.dumps(
        {
            "imageUrl": "https://img.alicdn.com/tfs/TB1U4r9AeH2gK0jSZJnXXaT1FXa-2880-480.png",
            "dataId": "img123****",
            "referer": "www.aliyun.com",
        },
        separators=(",", ":"),
    ),
}


def _sdk_authorization(headers: dict[str, str], body: bytes, key_id: str, secret: str) -> str:
    request = SimpleNamespace(method="POST", pathname="/", query={}, headers=dict(headers))
    payload = SdkUtils.hash(body, "ACS3-HMAC-SHA256").hex()
    return SdkUtils.get_authorization(request, "ACS3-HMAC-SHA256", payload, key_id, secret)


@pytest.mark.parametrize("token", [None, "sts-token-value"])
def test_signature_equals_the_official_sdk_signature(token: str | None) -> None:
    signed = signing.sign_moderation_request(
        host="green-cip.ap-southeast-1.aliyuncs.com",
        key_id="test-key-id",
        secret="test-secret",
        fields=FIELDS,
        security_token=token,
        nonce="3b7f4c2e9a1d4e6f8a0b1c2d3e4f5a6b",
        date="2026-11-25T10:00:00Z",
    )
    headers = {k: v for k, v in signed.headers.items() if k != "Authorization"}
    assert signed.headers["Authorization"] == _sdk_authorization(
        headers, signed.body, "test-key-id", "test-secret"
    )


def test_form_body_equals_the_official_sdk_form_encoding() -> None:
    assert signing.form_body(FIELDS).decode() == SdkUtils.to_form(FIELDS)


def test_known_vector_is_stable() -> None:
    """A fixed vector, so a change to canonicalisation is caught even without the SDK."""
    headers = {
        "host": "example.com",
        "x-acs-action": "ImageModeration",
        "x-acs-version": "2022-03-02",
        "x-acs-date": "2026-01-01T00:00:00Z",
        "x-acs-signature-nonce": "n1",
        "x-acs-content-sha256": signing.sha256_hex(b""),
    }
    auth = signing.authorization("id", "secret", "POST", "/", {}, headers, signing.sha256_hex(b""))
    assert auth.startswith(
        "ACS3-HMAC-SHA256 Credential=id,SignedHeaders=host;x-acs-action;x-acs-content-sha256;"
        "x-acs-date;x-acs-signature-nonce;x-acs-version,Signature="
    )
    assert auth == _sdk_authorization(headers, b"", "id", "secret")


def test_every_attempt_gets_a_fresh_nonce() -> None:
    nonces = {signing.new_nonce() for _ in range(1000)}
    assert len(nonces) == 1000


def test_verify_accepts_what_sign_produced_and_rejects_tampering() -> None:
    signed = signing.sign_moderation_request(
        host="127.0.0.1:8080", key_id="k", secret="s", fields=FIELDS
    )
    lower = {k.lower(): v for k, v in signed.headers.items()}
    parsed = signing.parse_authorization(lower["authorization"])
    assert parsed is not None and parsed.key_id == "k"
    assert signing.verify_signature(parsed, "s", "POST", "/", {}, lower, signed.body)
    assert not signing.verify_signature(parsed, "wrong", "POST", "/", {}, lower, signed.body)
    assert not signing.verify_signature(parsed, "s", "POST", "/", {}, lower, signed.body + b"x")
    tampered = dict(lower, **{"x-acs-date": "2020-01-01T00:00:00Z"})
    assert not signing.verify_signature(parsed, "s", "POST", "/", {}, tampered, signed.body)


def test_signed_request_repr_hides_headers_and_body() -> None:
    signed = signing.sign_moderation_request(host="h", key_id="k", secret="s3cr3t", fields=FIELDS)
    assert "Signature" not in repr(signed) and "s3cr3t" not in repr(signed)


def test_parse_authorization_refuses_other_shapes() -> None:
    assert signing.parse_authorization("acs id:sig") is None
    assert signing.parse_authorization("") is None
