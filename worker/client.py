"""Signs and sends one ImageModeration call; knows nothing of Celery or SQL.

One :class:`ModerationClient` per process is enough: its ``requests.Session`` keeps a pool of
keep-alive connections sized for the worker's thread count, and it is safe to share between
threads (each call builds its own headers and nonce).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from worker.errors import ModerationError, Outcome, TransportError, classify, error_for
from worker.params import ImageRef, request_fields
from worker.results import MalformedResponse, ModerationResponse, parse_response
from worker.settings import Credentials, Settings
from worker.signing import sign_moderation_request

log = logging.getLogger(__name__)

USER_AGENT = "imgmod/0.1 (+https://github.com/imgmod/imgmod)"


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
        pool_size: int = 256,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"endpoint {endpoint!r} must be an http(s) URL with a host")
        self.endpoint = f"{parts.scheme}://{parts.netloc}/"
        self._host = parts.netloc
        self._credentials = credentials
        self._timeout = (connect_timeout, read_timeout)
        self._session = requests.Session()
        # requests reads the environment (proxy variables, CA bundle, ~/.netrc) on every call
        # when trust_env is on: a quarter of a call's CPU here. Read it once, here, instead.
        environment = self._session.merge_environment_settings(self.endpoint, {}, None, None, None)
        self._proxies: dict[str, str] = dict(environment["proxies"])
        self._verify: bool | str = (
            environment["verify"] if environment["verify"] is not None else True
        )
        self._session.trust_env = False
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    @classmethod
    def from_settings(cls, settings: Settings, credentials: Credentials) -> ModerationClient:
        return cls(
            settings.endpoint,
            credentials,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            pool_size=settings.pool_size,
        )

    def __repr__(self) -> str:
        return (
            f"ModerationClient(endpoint={self.endpoint!r}, "
            f"access_key_id={self._credentials.access_key_id!r})"
        )

    def close(self) -> None:
        self._session.close()

    def send(self, fields: dict[str, str]) -> CallResult:
        """POST one signed request; transport faults and unparsable bodies raise TransportError.

        The answer is returned whatever its Code: deciding what a code means is the caller's
        business (see :func:`moderate`).
        """
        creds = self._credentials
        signed = sign_moderation_request(
            host=self._host,
            key_id=creds.access_key_id,
            secret=creds.access_key_secret,
            security_token=creds.security_token,
            fields=fields,
            user_agent=USER_AGENT,
        )
        started = time.monotonic()
        try:
            http = self._session.post(
                self.endpoint,
                data=signed.body,
                headers=signed.headers,
                timeout=self._timeout,
                proxies=self._proxies,
                verify=self._verify,
            )
            body = http.content
        except requests.Timeout as exc:
            raise TransportError(
                "timeout", f"no answer within {self._timeout}s: {type(exc).__name__}"
            ) from None
        except requests.RequestException as exc:
            raise TransportError("connection", f"{type(exc).__name__}: {_short(exc)}") from None
        seconds = time.monotonic() - started
        try:
            response = parse_response(body, http_status=http.status_code)
        except MalformedResponse as exc:
            if http.status_code >= 500:  # a gateway's HTML or empty 5xx page
                raise error_for(
                    f"HTTP {http.status_code}",
                    f"gateway error page: {_short(exc)}",
                    None,
                    http.status_code,
                ) from None
            raise TransportError(
                "malformed", f"HTTP {http.status_code}, unparsable body: {_short(exc)}"
            ) from None
        return CallResult(response=response, seconds=seconds)

    def moderate(self, service: str, ref: ImageRef, info_type: str = "") -> ModerationResponse:
        """Moderate one image; a Code 200 answer is returned, anything else raised as its error."""
        result = self.send(request_fields(service, ref, info_type))
        response = result.response
        if classify(response.code, response.http_status) is Outcome.SUCCESS:
            return response
        raise error_for(response.code, response.msg, response.request_id, response.http_status)


def _short(exc: object, limit: int = 200) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "..."


__all__ = ["CallResult", "ModerationClient", "ModerationError"]
