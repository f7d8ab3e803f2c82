"""Signs and sends one ImageModeration call; knows nothing of Celery or SQL.

One :class:`ModerationClient` per process is enough: its ``requests.Session`` keeps a pool of
keep-alive connections sized for the worker's thread count, and it is safe to share between
threads (each call builds its own headers and nonce).

Three guards keep a call to what it is meant to be, one signed request to one endpoint:

* **No redirects.** A 3xx is an :class:`~worker.errors.EndpointRedirect`, never followed: the
  signed body and the STS token would go to the host the ``Location`` names, and its answer
  would be stored as the verdict.
* **A wall-clock deadline per call** (``IMGMOD_CALL_DEADLINE``). The read timeout is per socket
  read, so a server sending a byte every half second holds a call forever, past its row's lease,
  and another worker bills again. :mod:`worker.deadline` shuts the socket of a call still
  running at its deadline.
* **A cap on the answer's size**, read as a stream: a broken proxy cannot fill the memory.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

from worker.deadline import WATCHDOG, Call, WatchedAdapter
from worker.errors import (
    REDIRECT,
    ModerationError,
    Outcome,
    TransportError,
    classify,
    error_for,
)
from worker.params import ImageRef, request_fields
from worker.results import MalformedResponse, ModerationResponse, parse_response
from worker.settings import Credentials, Settings, header_unsafe, is_loopback_host
from worker.signing import SignedRequest, sign_moderation_request

log = logging.getLogger(__name__)

USER_AGENT = "imgmod/0.1 (+https://github.com/imgmod/imgmod)"
# An ImageModeration answer is a few KB (labels, OCR text); 2 MiB is far beyond any real one.
MAX_ANSWER_BYTES = 2 * 1024 * 1024
DEFAULT_DEADLINE = 15.0
_CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class CallResult:
    """What one HTTP attempt produced: a parsed answer, and how long it took."""

    response: ModerationResponse
    seconds: float


class ModerationClient:
    def __init__(
        self,
        endpoint: str,
        credentials: Credentials,
        *,
        connect_timeout: float = 3.05,
        read_timeout: float = 10.0,
        deadline: float = DEFAULT_DEADLINE,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        pool_size: int = 256,
        allow_http: bool = False,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"endpoint {endpoint!r} must be an http(s) URL with a host")
        if parts.scheme == "http" and not allow_http and not is_loopback_host(parts.hostname or ""):
            raise ValueError(
                f"endpoint {endpoint!r} is plain http:// off loopback; use https:// (or "
                "IMGMOD_ALLOW_HTTP=1)"
            )
        for name, value in (
            ("access key id", credentials.access_key_id),
            ("access key secret", credentials.access_key_secret),
            ("security token", credentials.security_token or ""),
        ):
            problem = header_unsafe(value)
            if problem:
                raise ValueError(f"the {name} contains {problem}; it cannot be sent")
        if not deadline > 0:
            raise ValueError(f"deadline={deadline!r} must be positive")
        self.endpoint = f"{parts.scheme}://{parts.netloc}/"
        self._host = parts.netloc
        self._credentials = credentials
        self._timeout = (connect_timeout, read_timeout)
        self._deadline = deadline
        self._max_answer_bytes = max_answer_bytes
        self._session = requests.Session()
        # requests reads the environment (proxy variables, CA bundle, ~/.netrc) on every call
        # when trust_env is on: a quarter of a call's CPU here. Read it once, here, instead.
        environment = self._session.merge_environment_settings(self.endpoint, {}, None, None, None)
        self._proxies: dict[str, str] = dict(environment["proxies"])
        self._verify: bool | str = (
            environment["verify"] if environment["verify"] is not None else True
        )
        self._session.trust_env = False
        adapter = WatchedAdapter(pool_connections=2, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        # Calls go to the adapter directly: the session's per-call merging of settings, hooks
        # and cookies (none of which a signed API call uses) was a third of a call's CPU.
        self._adapter = adapter

    @classmethod
    def from_settings(cls, settings: Settings, credentials: Credentials) -> ModerationClient:
        return cls(
            settings.endpoint,
            credentials,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            deadline=settings.call_deadline,
            # A thread holds one call at a time: one keep-alive connection per worker thread
            # (imgmod worker -c N runs with N here, see worker.app).
            pool_size=settings.worker_concurrency,
            allow_http=settings.allow_http,
        )

    def __repr__(self) -> str:
        return (
            f"ModerationClient(endpoint={self.endpoint!r}, "
            f"access_key_id={self._credentials.access_key_id!r})"
        )

    def close(self) -> None:
        self._session.close()

    def send(self, fields: dict[str, str], action: str | None = None) -> CallResult:
        """POST one signed request; transport faults and unparsable bodies raise TransportError,
        a redirect raises EndpointRedirect.

        The answer is returned whatever its Code: deciding what a code means is the caller's
        business (see :func:`moderate`). The whole call, answer included, ends within the
        deadline: past it the socket is shut and the call is a ``timeout``.
        """
        return self.send_signed(self.sign(fields, action))

    def sign(self, fields: dict[str, str], action: str | None = None) -> SignedRequest:
        """The request :meth:`send` would POST, signed now: a caller that waits for a permit
        signs while it waits (:class:`worker.permits.Booking`) and sends with
        :meth:`send_signed`. The signature's date is the signing moment; the vendor accepts
        requests signed minutes earlier, and a permit is at most a second away."""
        creds = self._credentials
        return sign_moderation_request(
            host=self._host,
            key_id=creds.access_key_id,
            secret=creds.access_key_secret,
            security_token=creds.security_token,
            fields=fields,
            user_agent=USER_AGENT,
            **({"action": action} if action else {}),
        )

    def send_signed(self, signed: SignedRequest) -> CallResult:
        """:meth:`send` of a request signed by :meth:`sign`."""
        started = time.monotonic()
        call = WATCHDOG.begin(self._deadline)
        try:
            status, body = self._exchange(signed.body, signed.headers, call)
        finally:
            WATCHDOG.end(call)
        seconds = time.monotonic() - started
        try:
            response = parse_response(body, http_status=status)
        except MalformedResponse as exc:
            if call.expired:  # the watchdog cut a close-delimited body short
                raise self._deadline_passed() from None
            if status >= 500:  # a gateway's HTML or empty 5xx page
                raise error_for(
                    f"HTTP {status}", f"gateway error page: {_short(exc)}", None, status
                ) from None
            raise TransportError(
                "malformed", f"HTTP {status}, unparsable body: {_short(exc)}"
            ) from None
        return CallResult(response=response, seconds=seconds)

    def _exchange(self, body: bytes, headers: dict[str, str], call: Call) -> tuple[int, bytes]:
        """The HTTP status and the whole body of one POST, read within the call's deadline."""
        try:
            request = requests.PreparedRequest()
            request.prepare(method="POST", url=self.endpoint, headers=headers, data=body)
            # The adapter never follows a redirect (only a session does): see _redirected.
            http = self._adapter.send(
                request,
                stream=True,
                timeout=self._timeout,
                verify=self._verify,
                cert=None,
                proxies=self._proxies,
            )
            try:
                if http.is_redirect or 300 <= http.status_code < 400:
                    raise self._redirected(http)
                return http.status_code, self._read_answer(http)
            finally:
                http.close()
        except ModerationError:
            raise
        except (requests.RequestException, OSError) as exc:
            if call.expired:
                raise self._deadline_passed() from None
            if isinstance(exc, requests.Timeout):
                raise TransportError(
                    "timeout", f"no answer within {self._timeout}s: {type(exc).__name__}"
                ) from None
            raise TransportError(
                "connection", f"{type(exc).__name__}: {self._scrub(_short(exc))}"
            ) from None

    def _read_answer(self, http: requests.Response) -> bytes:
        """The body, streamed, refused past ``max_answer_bytes`` (declared or received)."""
        limit = self._max_answer_bytes
        declared = http.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise TransportError(
                "malformed",
                f"HTTP {http.status_code}: an answer of {declared} bytes, over the {limit} "
                "bytes an ImageModeration answer can need",
            )
        chunks: list[bytes] = []
        size = 0
        for chunk in http.iter_content(_CHUNK_BYTES):
            size += len(chunk)
            if size > limit:
                raise TransportError(
                    "malformed",
                    f"HTTP {http.status_code}: the answer passed {limit} bytes, more than an "
                    "ImageModeration answer can need; stopped reading",
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _redirected(self, http: requests.Response) -> ModerationError:
        target = urlsplit(http.headers.get("Location", ""))
        where = f"{target.scheme}://{target.hostname}" if target.hostname else "elsewhere"
        where = where.encode("ascii", "backslashreplace").decode("ascii")[:200]
        return error_for(
            REDIRECT,
            f"HTTP {http.status_code} to {where}; not followed, nothing was sent there",
            http.headers.get("x-acs-request-id"),
            http.status_code,
        )

    def _deadline_passed(self) -> TransportError:
        return TransportError(
            "timeout",
            f"no complete answer within the call deadline of {self._deadline:g}s "
            "(IMGMOD_CALL_DEADLINE); the connection was closed",
        )

    def _scrub(self, text: str) -> str:
        """Defence in depth: no credential, as given or as a library quotes it, in an error."""
        creds = self._credentials
        for secret in (creds.access_key_secret, creds.security_token):
            if secret:
                for form in (secret, repr(secret)[1:-1]):
                    text = text.replace(form, "***")
        return text

    def moderate(self, service: str, ref: ImageRef, info_type: str = "") -> ModerationResponse:
        """Moderate one image; a Code 200 answer is returned, anything else raised as its error."""
        return self.moderate_signed(self.prepare(service, ref, info_type))

    def prepare(self, service: str, ref: ImageRef, info_type: str = "") -> SignedRequest:
        """The signed request of :meth:`moderate`, to send later with :meth:`moderate_signed`."""
        return self.sign(request_fields(service, ref, info_type))

    def moderate_signed(self, signed: SignedRequest) -> ModerationResponse:
        """:meth:`moderate` of a request made by :meth:`prepare`."""
        result = self.send_signed(signed)
        response = result.response
        if classify(response.code, response.http_status) is Outcome.SUCCESS:
            return response
        raise error_for(response.code, response.msg, response.request_id, response.http_status)


def _short(exc: object, limit: int = 200) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "..."


__all__ = ["MAX_ANSWER_BYTES", "CallResult", "ModerationClient", "ModerationError"]
