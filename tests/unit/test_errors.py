"""Every documented code and every named gateway code: its outcome, its exception, its message."""

from __future__ import annotations

import pickle

import pytest

from worker.errors import (
    CODE_MEANINGS,
    LOCAL_INVALID,
    AuthError,
    BadRequest,
    DownloadFailed,
    DownloadTimeout,
    EndpointRedirect,
    ImageTooLarge,
    ModerationError,
    NonceReused,
    NoPermission,
    Outcome,
    ServiceError,
    Throttled,
    TransportError,
    UnknownError,
    UnsupportedFormat,
    classify,
    error_for,
    retry_code,
)

DOCUMENTED: dict[int, tuple[Outcome, type[ModerationError] | None]] = {
    200: (Outcome.SUCCESS, None),
    400: (Outcome.FAIL, BadRequest),
    401: (Outcome.FAIL, BadRequest),
    402: (Outcome.FAIL, BadRequest),
    403: (Outcome.RETRY, Throttled),
    404: (Outcome.RETRY, DownloadFailed),  # the vendor: "check the image URL or retry"
    405: (Outcome.RETRY, DownloadTimeout),
    406: (Outcome.FAIL, ImageTooLarge),
    407: (Outcome.FAIL, UnsupportedFormat),
    408: (Outcome.FAIL, NoPermission),
    500: (Outcome.RETRY, ServiceError),
}

GATEWAY: dict[str, tuple[Outcome, type[ModerationError]]] = {
    "Throttling": (Outcome.RETRY, Throttled),
    "Throttling.User": (Outcome.RETRY, Throttled),
    "Throttling.Api": (Outcome.RETRY, Throttled),
    "Throttling.Tenant": (Outcome.RETRY, Throttled),
    "ServiceUnavailable": (Outcome.RETRY, ServiceError),
    "InternalError": (Outcome.RETRY, ServiceError),
    "SignatureNonceUsed": (Outcome.RETRY, NonceReused),
    "SignatureDoesNotMatch": (Outcome.FAIL, AuthError),
    "InvalidAccessKeyId.NotFound": (Outcome.FAIL, AuthError),
    "InvalidAccessKeyId.Inactive": (Outcome.FAIL, AuthError),
    "IncompleteSignature": (Outcome.FAIL, AuthError),
    "InvalidTimeStamp.Expired": (Outcome.FAIL, AuthError),
    "InvalidTimeStamp.Format": (Outcome.FAIL, AuthError),
    "Forbidden.RAM": (Outcome.FAIL, NoPermission),
    "Forbidden.AccessKeyDisabled": (Outcome.FAIL, NoPermission),
    "InvalidAction": (Outcome.FAIL, BadRequest),
    "InvalidAction.NotFound": (Outcome.FAIL, BadRequest),
    "InvalidActionName": (Outcome.FAIL, BadRequest),
    "MissingParameter": (Outcome.FAIL, BadRequest),
    "SomethingNew": (Outcome.FAIL, UnknownError),
    "timeout": (Outcome.RETRY, TransportError),
    "connection": (Outcome.RETRY, TransportError),
    "malformed": (Outcome.RETRY, TransportError),
    "redirect": (Outcome.FAIL, EndpointRedirect),
    LOCAL_INVALID: (Outcome.FAIL, BadRequest),
}


def test_code_table_covers_every_documented_code() -> None:
    assert set(CODE_MEANINGS) == set(DOCUMENTED)


@pytest.mark.parametrize("code", sorted(DOCUMENTED))
def test_documented_code_is_classified(code: int) -> None:
    outcome, _ = DOCUMENTED[code]
    assert classify(code) is outcome
    assert classify(code, http_status=200) is outcome
    assert classify(str(code)) is outcome


@pytest.mark.parametrize("code", sorted(c for c in DOCUMENTED if c != 200))
def test_documented_error_code_gets_its_exception(code: int) -> None:
    outcome, kind = DOCUMENTED[code]
    error = error_for(code, "vendor message", "REQ-1", 200)
    assert type(error) is kind
    assert error.retryable is (outcome is Outcome.RETRY)
    assert (error.code, error.message, error.request_id, error.http_status) == (
        code,
        "vendor message",
        "REQ-1",
        200,
    )


@pytest.mark.parametrize("code", sorted(GATEWAY))
def test_gateway_code_is_classified_and_gets_its_exception(code: str) -> None:
    outcome, kind = GATEWAY[code]
    assert classify(code, http_status=400) is outcome
    error = error_for(code, "m", "REQ-2", 400)
    assert type(error) is kind
    assert error.retryable is (outcome is Outcome.RETRY)


def test_no_code_at_all_is_a_transport_error_to_retry() -> None:
    assert classify(None) is Outcome.RETRY
    assert classify(None, http_status=502) is Outcome.RETRY
    assert type(error_for(None, "read timed out")) is TransportError


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_gateway_5xx_with_unknown_code_is_a_service_error_to_retry(status: int) -> None:
    assert classify("SomethingNew", http_status=status) is Outcome.RETRY
    assert type(error_for("SomethingNew", "", http_status=status)) is ServiceError
    assert classify(status) is Outcome.RETRY


def test_http_429_with_unknown_code_is_throttling() -> None:
    assert classify("TooManyRequests", http_status=429) is Outcome.RETRY
    assert type(error_for("TooManyRequests", "", http_status=429)) is Throttled


def test_undocumented_integer_code_is_final() -> None:
    assert classify(409) is Outcome.FAIL
    assert type(error_for(409, "?")) is UnknownError


def test_body_code_wins_over_http_status() -> None:
    assert classify(401, http_status=503) is Outcome.FAIL
    assert classify("SignatureDoesNotMatch", http_status=500) is Outcome.FAIL


def test_code_200_is_not_an_error() -> None:
    with pytest.raises(ValueError, match="200"):
        error_for(200, "OK")


@pytest.mark.parametrize(
    "code",
    [*DOCUMENTED, *GATEWAY, None, 409, 503, "Weird"],
)
@pytest.mark.parametrize("status", [None, 200, 400, 429, 503])
def test_exception_retryable_always_agrees_with_classify(
    code: int | str | None, status: int | None
) -> None:
    outcome = classify(code, status)
    if outcome is Outcome.SUCCESS:
        return
    assert error_for(code, "", None, status).retryable is (outcome is Outcome.RETRY)


@pytest.mark.parametrize(
    ("code", "status", "key"),
    [
        (403, None, "403"),
        ("403", None, "403"),
        ("Throttling", None, "403"),
        ("Throttling.User", None, "403"),
        ("Throttling.Api", 400, "403"),
        ("TooManyRequests", 429, "403"),
        (405, None, "405"),
        (500, None, "500"),
        (502, None, "500"),
        ("ServiceUnavailable", 503, "500"),
        ("InternalError", 500, "500"),
        ("Weird", 504, "500"),
        (None, None, "transport"),
        ("timeout", None, "transport"),
        ("connection", None, "transport"),
        ("malformed", None, "transport"),
        ("SignatureNonceUsed", 400, "nonce"),
        (404, None, "404"),
        ("SignatureDoesNotMatch", 400, "SignatureDoesNotMatch"),
    ],
)
def test_retry_code_groups_codes_that_mean_the_same(
    code: int | str | None, status: int | None, key: str
) -> None:
    assert retry_code(code, status) == key


def test_retry_code_without_http_status() -> None:
    assert retry_code("Throttling.User") == "403"
    assert retry_code(None) == "transport"


# --- messages ----------------------------------------------------------------------------------


def test_message_says_what_happened_names_code_and_request_id_and_what_to_do() -> None:
    text = str(error_for(403, "Request was denied due to flow control.", "REQ-9", 200))
    assert text == (
        "throttled: the account's QPS limit was exceeded (code 403, HTTP 200, RequestId REQ-9): "
        "Request was denied due to flow control. " + CODE_MEANINGS[403]
    )


@pytest.mark.parametrize(
    ("code", "fix"),
    [
        (400, "set imageUrl"),
        (401, "correct the value"),
        (402, "2,048 characters"),
        (403, "lower IMGMOD_QPS"),
        (404, "publicly reachable"),
        (405, "3 seconds"),
        (406, "20 MB"),
        (407, "PNG, JPG"),
        (408, "AliyunYundunGreenWebFullAccess"),
        (500, "retried"),
    ],
)
def test_documented_code_message_carries_the_vendors_advice(code: int, fix: str) -> None:
    text = str(error_for(code, "msg", "REQ"))
    assert f"code {code}" in text
    assert "RequestId REQ" in text
    assert fix in text


@pytest.mark.parametrize(
    ("kind", "code", "fix"),
    [
        (Throttled, "Throttling.User", "IMGMOD_QPS"),
        (DownloadTimeout, None, "OSS"),
        (ServiceError, "ServiceUnavailable", "retried"),
        (TransportError, "timeout", "IMGMOD_READ_TIMEOUT"),
        (NonceReused, "SignatureNonceUsed", "fresh nonce"),
        (BadRequest, LOCAL_INVALID, "Correct the named parameter"),
        (DownloadFailed, None, "publicly reachable"),
        (ImageTooLarge, None, "20 MB"),
        (UnsupportedFormat, None, "PNG"),
        (NoPermission, "Forbidden.RAM", "AliyunYundunGreenWebFullAccess"),
        (AuthError, "SignatureDoesNotMatch", "ALIBABA_CLOUD_ACCESS_KEY_SECRET"),
        (AuthError, "InvalidAccessKeyId.NotFound", "ALIBABA_CLOUD_ACCESS_KEY_ID"),
        (AuthError, "InvalidTimeStamp.Expired", "clock"),
        (UnknownError, "SomethingNew", "not retried"),
    ],
)
def test_each_exception_says_what_to_do(
    kind: type[ModerationError], code: str | None, fix: str
) -> None:
    error = kind(code, "vendor says so", "REQ-3")
    text = str(error)
    assert text.startswith(kind.summary)
    assert "vendor says so" in text
    assert fix in text
    assert isinstance(error, ModerationError)


def test_local_validation_error_reads_naturally() -> None:
    text = str(BadRequest(LOCAL_INVALID, "dataId: longer than 64 characters (65); shorten it"))
    assert text == (
        "the request was rejected as invalid (code invalid_parameter): dataId: longer than 64 "
        "characters (65); shorten it. Correct the named parameter; the item is not retried."
    )


def test_message_without_code_or_request_id_has_no_empty_tags() -> None:
    assert str(TransportError()) == f"{TransportError.summary}. {TransportError.advice}"


def test_very_long_vendor_message_is_truncated() -> None:
    text = str(ServiceError(500, "x" * 5000))
    assert len(text) < 800
    assert "x" * 500 + "..." in text


def test_exceptions_pickle_with_all_their_fields() -> None:
    error = error_for("Throttling.User", "slow down", "REQ-4", 400)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is Throttled
    assert (copy.code, copy.message, copy.request_id, copy.http_status) == (
        "Throttling.User",
        "slow down",
        "REQ-4",
        400,
    )
    assert str(copy) == str(error)


def test_retryable_is_a_class_attribute() -> None:
    retryable = {Throttled, DownloadTimeout, DownloadFailed, ServiceError, TransportError}
    retryable |= {NonceReused}
    final = {BadRequest, ImageTooLarge, UnsupportedFormat, NoPermission, AuthError}
    final |= {EndpointRedirect}
    assert all(kind.retryable for kind in retryable)
    assert not any(kind.retryable for kind in final | {UnknownError, ModerationError})
