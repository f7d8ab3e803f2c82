"""The emulator as the tests drive it: :class:`worker.processes.EmulatorHandle` plus one signed
ImageModeration call over plain HTTP (:meth:`Emulator.moderate`), for tests that check the
emulator's answers byte by byte rather than through imgmod's client."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from worker.emulator import TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET
from worker.processes import EmulatorHandle
from worker.processes import running_emulator as _running_emulator
from worker.signing import sign_moderation_request


@dataclass(frozen=True)
class Reply:
    """One raw HTTP answer from the emulator."""

    status: int
    body: bytes

    def json(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.body)
        return result


@dataclass(frozen=True)
class Emulator(EmulatorHandle):
    """A running emulator, and the AccessKey pair :meth:`moderate` signs with by default."""

    access_key_id: str = TEST_ACCESS_KEY_ID
    access_key_secret: str = field(default=TEST_ACCESS_KEY_SECRET, repr=False)

    def moderate(
        self,
        service_parameters: dict[str, Any] | str,
        service: str = "baselineCheck_global",
        *,
        key_id: str | None = None,
        secret: str | None = None,
        timeout: float = 10.0,
        **sign: Any,
    ) -> Reply:
        """One signed ImageModeration call over plain HTTP (``sign`` goes to the signer:
        nonce, date, action, version, security_token). Connection errors propagate."""
        fields = {"Service": service} if service else {}
        if not isinstance(service_parameters, str):
            service_parameters = json.dumps(service_parameters)
        if service_parameters:
            fields["ServiceParameters"] = service_parameters
        signed = sign_moderation_request(
            host=self.endpoint,
            key_id=key_id or self.access_key_id,
            secret=secret or self.access_key_secret,
            fields=fields,
            **sign,
        )
        host, port = self.endpoint.rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
        try:
            connection.request("POST", "/", body=signed.body, headers=signed.headers)
            response = connection.getresponse()
            return Reply(response.status, response.read())
        finally:
            connection.close()


@contextmanager
def running_emulator(**options: Any) -> Iterator[Emulator]:
    """:func:`worker.processes.running_emulator`, yielding an :class:`Emulator`."""
    with _running_emulator(**options) as handle:
        yield Emulator(url=handle.url, process=handle.process, oss_url=handle.oss_url)
