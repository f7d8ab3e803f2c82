"""What an answer of ImageModeration means for the item: done, try again, or give up.

Two kinds of codes arrive. The service puts its own integer ``Code`` in the body (the vendor's
table: 200 to 500). The API gateway in front of it answers some requests itself, with a string
``Code`` such as ``Throttling.User`` or ``SignatureDoesNotMatch`` and usually a non-200 HTTP
status. :func:`classify` maps both to an :class:`Outcome`; :func:`error_for` builds the exception
that says what happened and what to do; :func:`retry_code` names the bucket a retry is counted in.

Pure: no I/O, and nothing here ever sees a secret (messages come from the vendor or the caller).
"""

from __future__ import annotations

import enum
from typing import ClassVar


class Outcome(enum.Enum):
    SUCCESS = "success"
    RETRY = "retry"
    FAIL = "fail"


# The vendor's code table, with what to do about each code.
CODE_MEANINGS: dict[int, str] = {
    200: "The request is successful.",
    400: "A request parameter is empty: set imageUrl (or ossBucketName, ossObjectName and "
    "ossRegionId) and Service.",
    401: "A request parameter is invalid: check and correct the value (imageUrl, ossRegionId, "
    "dataId, infoType, Service).",
    402: "A request parameter is too long: imageUrl takes at most 2,048 characters, dataId 64, "
    "referer 256.",
    403: "The request exceeds the QPS limit: it is retried later; lower IMGMOD_QPS or the "
    "concurrency if this keeps happening.",
    404: "The image could not be downloaded: it is retried once (archive CDNs answer 404 for a "
    "moment now and then; IMGMOD_RETRY_PER_CODE=404=N sets the attempts); if it persists, check "
    "that the URL is publicly reachable, or pass the image through OSS authorization.",
    405: "The image download timed out (the service waits 3 seconds): it is retried; if it keeps "
    "timing out, serve the image faster or pass it through OSS authorization.",
    406: "The image is too large: at most 20 MB, 16,384 px per side and 167 million pixels; "
    "shrink it.",
    407: "The image format is not supported: use PNG, JPG, JPEG, BMP, WEBP, TIFF, SVG, HEIF, GIF "
    "or ICO.",
    408: "The account lacks permission: activate Content Moderation, settle overdue payments, or "
    "grant the RAM user AliyunYundunGreenWebFullAccess.",
    500: "A system exception occurred in the service: it is retried later.",
}

# Codes our own client reports when no answer could be read (see TransportError).
TRANSPORT_CODES = frozenset({"timeout", "connection", "malformed"})
# The code our client reports for a 3xx answer, which it never follows (see EndpointRedirect).
REDIRECT = "redirect"
# The code a locally rejected request carries (a BadRequest raised before any call).
LOCAL_INVALID = "invalid_parameter"

# Gateway codes, matched on their first dotted segment ("Throttling.User" -> "Throttling").
_THROTTLING = "Throttling"
_UNAVAILABLE = frozenset({"ServiceUnavailable", "InternalError"})
_NONCE_USED = "SignatureNonceUsed"
_AUTH = frozenset(
    {"SignatureDoesNotMatch", "InvalidAccessKeyId", "IncompleteSignature", "InvalidTimeStamp"}
)
_NO_PERMISSION = frozenset({"Forbidden"})
_BAD_REQUEST = frozenset({"MissingParameter", "InvalidParameter", "InvalidVersion"})


def _int_code(code: int | str | None) -> int | None:
    if isinstance(code, bool):
        return None
    if isinstance(code, int):
        return code
    if isinstance(code, str) and code.isascii() and code.isdigit():
        return int(code)
    return None


def _head(code: str) -> str:
    return code.split(".", 1)[0]


def classify(code: int | str | None, http_status: int | None = None) -> Outcome:
    """Whether an answer is a success, worth retrying, or final.

    ``code`` is the body's ``Code`` (None when there was no readable answer: a transport error or
    an unparsable body, which are retried). ``http_status`` decides only for codes nobody
    documented: a 5xx or 429 from the gateway is retried, anything else unknown is final.
    """
    error = _error_class(code, http_status)
    if error is None:
        return Outcome.SUCCESS
    return Outcome.RETRY if error.retryable else Outcome.FAIL


class ModerationError(Exception):
    """A request for one image did not produce a result.

    Carries the vendor's ``code``, ``message`` and ``request_id`` (quote it to support), and the
    HTTP status. ``str()`` says what happened and what to do.
    """

    retryable: ClassVar[bool] = False
    summary: ClassVar[str] = "the moderation request failed"
    advice: ClassVar[str] = "see the code and message, and the vendor's code table"

    def __init__(
        self,
        code: int | str | None = None,
        message: str | None = None,
        request_id: str | None = None,
        http_status: int | None = None,
    ) -> None:
        # All four go to args, so the exception pickles (Celery moves exceptions between processes).
        super().__init__(code, message, request_id, http_status)
        self.code = code
        self.message = message or ""
        self.request_id = request_id
        self.http_status = http_status

    def what_to_do(self) -> str:
        """The vendor's advice for a documented code, else the advice of this kind of error."""
        documented = _int_code(self.code)
        if documented is not None and documented in CODE_MEANINGS and documented != 200:
            return CODE_MEANINGS[documented]
        return self.advice

    def __str__(self) -> str:
        tags = []
        if self.code is not None:
            tags.append(f"code {self.code}")
        if self.http_status is not None:
            tags.append(f"HTTP {self.http_status}")
        if self.request_id:
            tags.append(f"RequestId {self.request_id}")
        text = self.summary + (f" ({', '.join(tags)})" if tags else "")
        message = self.message.strip().rstrip(".")
        if len(message) > 500:  # a gateway may answer with a whole HTML page
            message = message[:500] + "..."
        if message:
            text += f": {message}"
        return f"{text}. {self.what_to_do()}"


class Throttled(ModerationError):
    retryable = True
    summary = "throttled: the account's QPS limit was exceeded"
    advice = (
        "It is retried later; lower IMGMOD_QPS or the concurrency if this keeps happening, or ask "
        "Alibaba Cloud for a higher QPS."
    )


class DownloadTimeout(ModerationError):
    retryable = True
    summary = "the service timed out downloading the image"
    advice = CODE_MEANINGS[405]


class ServiceError(ModerationError):
    retryable = True
    summary = "the service or its gateway failed"
    advice = "It is retried later; if it persists, check Alibaba Cloud's status page."


class TransportError(ModerationError):
    retryable = True
    summary = "no usable answer from the service"
    advice = (
        "It is retried later; if it persists, check the network path to the endpoint "
        "(IMGMOD_ENDPOINT or IMGMOD_REGION) and the timeouts (IMGMOD_CONNECT_TIMEOUT, "
        "IMGMOD_READ_TIMEOUT)."
    )


class NonceReused(ModerationError):
    """The gateway saw our SignatureNonce before: a replay on our side, fixed by a new nonce."""

    retryable = True
    summary = "the request's signature nonce was already used"
    advice = "It is retried with a fresh nonce."


class BadRequest(ModerationError):
    summary = "the request was rejected as invalid"
    advice = "Correct the named parameter; the item is not retried."


class DownloadFailed(ModerationError):
    """Code 404. The vendor's table says "check the image URL or retry": archive CDNs answer 404
    for a moment (a cold cache, an object still replicating), so it gets a small allowance of
    retries (``worker.retry.DEFAULT_ATTEMPTS``), not the full count of a 500."""

    retryable = True
    summary = "the service could not download the image"
    advice = CODE_MEANINGS[404]


class ImageTooLarge(ModerationError):
    summary = "the image is too large"
    advice = CODE_MEANINGS[406]


class UnsupportedFormat(ModerationError):
    summary = "the image format is not supported"
    advice = CODE_MEANINGS[407]


class NoPermission(ModerationError):
    summary = "the account may not call this service"
    advice = CODE_MEANINGS[408]


class AuthError(ModerationError):
    summary = "the gateway rejected the request's credentials or signature"
    advice = (
        "Check ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET (and "
        "ALIBABA_CLOUD_SECURITY_TOKEN for STS); nothing is retried until they are fixed."
    )

    def what_to_do(self) -> str:
        if isinstance(self.code, str) and _head(self.code) == "InvalidTimeStamp":
            return (
                "The request's timestamp is too far from Alibaba Cloud's clock: synchronise this "
                "machine's clock (NTP), then run again."
            )
        return self.advice


class EndpointRedirect(ModerationError):
    """The endpoint answered 3xx. Never followed: the signed body and the STS token would go to
    whatever host the Location names, and that host's answer would be stored as the verdict."""

    summary = "the endpoint answered with a redirect, which imgmod never follows"
    advice = (
        "Point IMGMOD_ENDPOINT (or IMGMOD_REGION) at the API itself, with https://; a proxy or "
        "load balancer that redirects must be bypassed. The item is not retried."
    )


class UnknownError(ModerationError):
    summary = "the service answered with a code imgmod does not know"
    advice = "The item is not retried; look the code up in the vendor's documentation."


_BY_INT_CODE: dict[int, type[ModerationError]] = {
    400: BadRequest,
    401: BadRequest,
    402: BadRequest,
    403: Throttled,
    404: DownloadFailed,
    405: DownloadTimeout,
    406: ImageTooLarge,
    407: UnsupportedFormat,
    408: NoPermission,
    500: ServiceError,
}


def _by_status(http_status: int | None) -> type[ModerationError]:
    """For codes nobody documented, the HTTP status decides: gateway 5xx and 429 are transient."""
    if http_status is not None and 500 <= http_status <= 599:
        return ServiceError
    if http_status == 429:
        return Throttled
    return UnknownError


def _error_class(code: int | str | None, http_status: int | None) -> type[ModerationError] | None:
    """The exception class for an answer, or None for a success."""
    if code is None:
        return TransportError
    number = _int_code(code)
    if number is not None:
        if number == 200:
            return None
        if number in _BY_INT_CODE:
            return _BY_INT_CODE[number]
        if 500 <= number <= 599:
            return ServiceError
        return _by_status(http_status)
    assert isinstance(code, str)
    if code in TRANSPORT_CODES:
        return TransportError
    if code == REDIRECT:
        return EndpointRedirect
    head = _head(code)
    if head.startswith(_THROTTLING):
        return Throttled
    if head in _UNAVAILABLE:
        return ServiceError
    if head == _NONCE_USED:
        return NonceReused
    if head in _AUTH:
        return AuthError
    if head in _NO_PERMISSION:
        return NoPermission
    if head.startswith("InvalidAction") or head in _BAD_REQUEST or code == LOCAL_INVALID:
        return BadRequest
    return _by_status(http_status)


def error_for(
    code: int | str | None,
    message: str | None,
    request_id: str | None = None,
    http_status: int | None = None,
) -> ModerationError:
    """The exception for a failed answer; ``retryable`` agrees with :func:`classify`.

    Raises ValueError for code 200, which is not an error.
    """
    error = _error_class(code, http_status)
    if error is None:
        raise ValueError("code 200 is a success, not an error")
    return error(code, message, request_id, http_status)


def retry_code(code: int | str | None, http_status: int | None = None) -> str:
    """The key that per-code retry limits count under.

    Codes that mean the same thing share a key: 403 and every ``Throttling*`` (and HTTP 429) are
    ``"403"``; 500, other 5xx and ``ServiceUnavailable``/``InternalError`` are ``"500"``;
    timeouts, connection errors and unreadable bodies are ``"transport"``. Other codes are
    their own text.
    """
    error = _error_class(code, http_status)
    if error is Throttled:
        return "403"
    if error is ServiceError:
        return "500"
    if error is TransportError:
        return "transport"
    if error is NonceReused:
        return "nonce"
    number = _int_code(code)
    return str(number) if number is not None else str(code)
