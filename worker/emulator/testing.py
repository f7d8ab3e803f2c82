"""Test helpers: run the emulator or the sample image server in a subprocess, on a free port.

Each server is started as ``sys.executable -m worker.emulator ... --port 0``; the helper polls
the server's announcement line (which carries the port the OS chose) and then an HTTP probe,
both against a deadline, and terminates the process on exit::

    with running_image_server() as images, running_emulator(qps=5) as emulator:
        url = images.image_url(3, "jpg")
        ...
        assert emulator.stats()["billed"] == 1
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from worker.emulator import TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET
from worker.signing import sign_moderation_request

STARTUP_DEADLINE_SECONDS = 20.0
_POLL_INTERVAL = 0.02


class ServerStartError(RuntimeError):
    """The subprocess exited or did not announce itself before the deadline."""


@dataclass(frozen=True)
class Reply:
    """One raw HTTP answer from the emulator."""

    status: int
    body: bytes

    def json(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.body)
        return result


@dataclass(frozen=True)
class EmulatorHandle:
    """A running emulator; ``url`` is the endpoint (``http://127.0.0.1:PORT``)."""

    url: str
    process: subprocess.Popen[bytes] = field(repr=False)
    access_key_id: str = TEST_ACCESS_KEY_ID
    access_key_secret: str = field(default=TEST_ACCESS_KEY_SECRET, repr=False)

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:PORT``, the form the SDK's and imgmod's ``endpoint`` settings take."""
        return self.url.split("://", 1)[1]

    def stats(self) -> dict[str, Any]:
        return _request_json(f"{self.url}/__emulator__/stats")

    def reset(self) -> dict[str, Any]:
        return _request_json(f"{self.url}/__emulator__/reset", method="POST", payload={})

    def configure(self, **knobs: float) -> dict[str, Any]:
        """Change runtime knobs: qps, latency_ms, jitter_ms, slow_ms, fault_* probabilities."""
        return _request_json(f"{self.url}/__emulator__/config", method="POST", payload=knobs)

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


@dataclass(frozen=True)
class ImageServerHandle:
    url: str
    process: subprocess.Popen[bytes] = field(repr=False)

    def image_url(self, n: int, ext: str = "png") -> str:
        return f"{self.url}/img/{n}.{ext}"


def _request_json(url: str, method: str = "GET", payload: Any = None) -> dict[str, Any]:
    data = None if payload is None else json.dumps(payload).encode()
    # Only ever our own http://127.0.0.1 servers, never a caller-supplied scheme.
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            result: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise ValueError(f"{method} {url} failed: {exc.code} {exc.read().decode()}") from None
    return result


def emulator_args(options: dict[str, Any]) -> list[str]:
    """CLI flags for keyword options: ``fault_405=0.1`` -> ``--fault-405 0.1``; ``keys=[...]``
    (or ``key=``) repeats ``--key``; None values are left out."""
    args: list[str] = []
    for name, value in options.items():
        if value is None:
            continue
        flag = "--key" if name in ("key", "keys") else "--" + name.replace("_", "-")
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            args += [flag, str(item)]
    return args


def _read_announcement(log: IO[bytes], process: subprocess.Popen[bytes], deadline: float) -> str:
    """Poll the subprocess's stdout file for its ``... http://HOST:PORT`` line."""
    while time.monotonic() < deadline:
        log.seek(0)
        for line in log.read().decode(errors="replace").splitlines():
            if "http://" in line:
                return line.rsplit(" ", 1)[-1].strip()
        if process.poll() is not None:
            raise ServerStartError(f"server exited with {process.returncode} before it was ready")
        time.sleep(_POLL_INTERVAL)
    raise ServerStartError("server did not announce its address before the deadline")


def _wait_until_answering(url: str, process: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerStartError(f"server exited with {process.returncode} before it answered")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - our own http server
                return
        except urllib.error.HTTPError:
            return  # it answers HTTP: ready
        except OSError:
            time.sleep(_POLL_INTERVAL)
    raise ServerStartError(f"server did not answer {url} before the deadline")


@contextmanager
def _running(args: list[str], probe_path: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        process = subprocess.Popen(
            [sys.executable, "-m", "worker.emulator", *args],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=str(Path(__file__).resolve().parents[2]),
        )
        try:
            deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
            try:
                url = _read_announcement(out, process, deadline)
                _wait_until_answering(url + probe_path, process, deadline)
            except ServerStartError as exc:
                err.seek(0)
                tail = err.read().decode(errors="replace")[-2000:]
                raise ServerStartError(f"{exc}; stderr:\n{tail}") from None
            yield url, process
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@contextmanager
def running_emulator(**options: Any) -> Iterator[EmulatorHandle]:
    """Run ``python -m worker.emulator`` with these options (as CLI flags) on a free port."""
    options.setdefault("host", "127.0.0.1")
    options["port"] = 0
    with _running(emulator_args(options), "/__emulator__/health") as (url, process):
        yield EmulatorHandle(url=url, process=process)


@contextmanager
def running_image_server() -> Iterator[ImageServerHandle]:
    """Run the sample image server on a free port."""
    args = ["sample-images", "--host", "127.0.0.1", "--port", "0"]
    with _running(args, "/img/0.png") as (url, process):
        yield ImageServerHandle(url=url, process=process)
