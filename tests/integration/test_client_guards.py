"""The client's guards over real sockets: no redirect is followed, a trickling server cannot hold
a call past its deadline, an oversized answer is refused, and credentials that cannot travel in
a header are refused before anything is sent. Each test runs its own small server on loopback."""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from worker import errors
from worker.client import ModerationClient
from worker.params import validate_ref
from worker.settings import Credentials

SERVICE = "baselineCheck_global"
CREDS = Credentials("test-key-id", "test-key-secret", "sts-token-value")
REF = validate_ref(image_url="https://example.com/a.png")
GOOD_BODY = json.dumps(
    {"RequestId": "R-1", "Code": 200, "Msg": "OK", "Data": {"RiskLevel": "none", "Result": []}}
).encode()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@contextmanager
def serving(answer: Callable[[socket.socket, bytes], None]) -> Iterator[tuple[str, list[bytes]]]:
    """A loopback HTTP/1.1 server with keep-alive: for each request it reads the head and the
    body, then lets ``answer(socket, request)`` write the response. Yields its URL and the
    requests it received."""
    received: list[bytes] = []

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            data = b""
            try:
                while True:
                    while b"\r\n\r\n" not in data:
                        chunk = self.request.recv(65536)
                        if not chunk:
                            return
                        data += chunk
                    head, _, data = data.partition(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    while len(data) < length:
                        chunk = self.request.recv(65536)
                        if not chunk:
                            return
                        data += chunk
                    request, data = head + b"\r\n\r\n" + data[:length], data[length:]
                    received.append(request)
                    answer(self.request, request)
            except OSError:
                pass  # the client hung up, as it should have

    server = _Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def respond(status: str, body: bytes, **headers: str) -> Callable[[socket.socket, bytes], None]:
    def answer(sock: socket.socket, _request: bytes) -> None:
        head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
        sock.sendall(head.encode() + b"\r\n" + body)

    return answer


def trickle(data: bytes, every: float) -> Callable[[socket.socket, bytes], None]:
    """Send ``data`` one byte at a time: each read gets something, so no read ever times out."""

    def answer(sock: socket.socket, _request: bytes = b"") -> None:
        for byte in data:
            sock.sendall(bytes([byte]))
            time.sleep(every)  # the fault being simulated, not synchronisation

    return answer


def good_answer_bytes() -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(GOOD_BODY)}\r\n\r\n"
    ).encode() + GOOD_BODY


# ---------------------------------------------------------------- redirects


@pytest.mark.parametrize("status", ["301 Moved Permanently", "302 Found", "307 Temporary Redirect"])
def test_a_redirect_is_an_error_and_the_other_host_receives_nothing(status: str) -> None:
    with (
        serving(respond("200 OK", GOOD_BODY)) as (elsewhere, stolen),
        serving(respond(status, b"", Location=elsewhere + "/steal")) as (endpoint, seen),
    ):
        client = ModerationClient(endpoint, CREDS, read_timeout=5)
        with pytest.raises(errors.EndpointRedirect) as info:
            client.moderate(SERVICE, REF)
        client.close()
    assert len(seen) == 1
    assert stolen == []  # neither the signed body nor the STS token went there
    err = info.value
    assert err.code == "redirect" and err.http_status == int(status[:3])
    assert not err.retryable
    assert "IMGMOD_ENDPOINT" in str(err) and "127.0.0.1" in str(err)
    assert "sts-token-value" not in str(err)


# ---------------------------------------------------------------- the deadline


def test_a_body_trickled_a_byte_at_a_time_ends_at_the_call_deadline() -> None:
    """A byte every 0.2 s: each read gets data within read_timeout=1, so only the deadline can
    end the call (the issue's server held a call with read_timeout=1 for 43 s)."""
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(GOOD_BODY)}\r\n\r\n".encode()

    def answer(sock: socket.socket, _request: bytes) -> None:
        sock.sendall(head)
        trickle(GOOD_BODY, 0.2)(sock)

    with serving(answer) as (endpoint, _):
        client = ModerationClient(endpoint, CREDS, read_timeout=1, deadline=1.5)
        started = time.monotonic()
        with pytest.raises(errors.TransportError) as info:
            client.moderate(SERVICE, REF)
        elapsed = time.monotonic() - started
        client.close()
    assert info.value.code == "timeout" and info.value.retryable
    assert "IMGMOD_CALL_DEADLINE" in str(info.value)
    assert 1.4 <= elapsed < 3.0, elapsed  # the whole body would take 0.2 s x ~80 bytes = 16 s


def test_a_status_line_trickled_a_byte_at_a_time_ends_at_the_call_deadline() -> None:
    with serving(trickle(good_answer_bytes(), 0.2)) as (endpoint, _):
        client = ModerationClient(endpoint, CREDS, read_timeout=1, deadline=1.0)
        started = time.monotonic()
        with pytest.raises(errors.TransportError) as info:
            client.moderate(SERVICE, REF)
        elapsed = time.monotonic() - started
        client.close()
    assert info.value.code == "timeout"
    assert elapsed < 2.5, elapsed


def test_a_deadline_cut_leaves_the_pool_usable_and_other_calls_untouched() -> None:
    """Slow and fast calls share one client and its pool of keep-alive connections: cutting the
    slow ones must not break a fast one running beside them or reusing a connection after them.
    """
    slow_head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(GOOD_BODY)}\r\n\r\n".encode()

    def answer(sock: socket.socket, request: bytes) -> None:
        if b"slow-call" in request:
            sock.sendall(slow_head)
            trickle(GOOD_BODY, 0.2)(sock)
        else:
            respond("200 OK", GOOD_BODY)(sock, request)

    slow_ref = validate_ref(image_url="https://example.com/a.png", data_id="slow-call")
    outcomes: list[str] = []
    lock = threading.Lock()
    with serving(answer) as (endpoint, _):
        client = ModerationClient(endpoint, CREDS, read_timeout=2, deadline=0.8, pool_size=4)

        def run(kind: str, times: int) -> None:
            for _ in range(times):
                try:
                    client.moderate(SERVICE, slow_ref if kind == "slow" else REF)
                    result = "ok"
                except errors.TransportError as exc:
                    result = str(exc.code)
                with lock:
                    outcomes.append(f"{kind}:{result}")

        threads = [threading.Thread(target=run, args=("slow", 2)) for _ in range(2)]
        threads += [threading.Thread(target=run, args=("fast", 60)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert client.moderate(SERVICE, REF).ok
        client.close()
    assert sorted(set(outcomes)) == ["fast:ok", "slow:timeout"]
    assert outcomes.count("fast:ok") == 120 and outcomes.count("slow:timeout") == 4


# ---------------------------------------------------------------- the answer's size


def test_an_answer_declared_larger_than_the_cap_is_refused_unread() -> None:
    huge = b"x" * (64 * 1024)
    with serving(respond("200 OK", huge)) as (endpoint, _):
        client = ModerationClient(endpoint, CREDS, max_answer_bytes=16 * 1024)
        with pytest.raises(errors.TransportError) as info:
            client.moderate(SERVICE, REF)
        client.close()
    assert info.value.code == "malformed" and "65536 bytes" in str(info.value)


def test_an_endless_answer_without_a_length_is_cut_at_the_cap() -> None:
    def endless(sock: socket.socket, _request: bytes) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        block = b"{" * 65536
        for _ in range(10_000):  # 640 MB if nobody stopped reading
            sock.sendall(block)

    with serving(endless) as (endpoint, _):
        client = ModerationClient(endpoint, CREDS, max_answer_bytes=256 * 1024, deadline=30)
        started = time.monotonic()
        with pytest.raises(errors.TransportError) as info:
            client.moderate(SERVICE, REF)
        elapsed = time.monotonic() - started
        client.close()
    assert info.value.code == "malformed" and "262144 bytes" in str(info.value)
    assert elapsed < 10


# ---------------------------------------------------------------- what may be sent at all


@pytest.mark.parametrize(
    "creds",
    [
        Credentials("key", "s3cr3t-value", "token-line-one\nX-Injected: 1"),
        Credentials("key", "s3cr3t-value\r\n", None),
        Credentials("ke y", "s3cr3t-value", None),
    ],
)
def test_credentials_that_cannot_travel_in_a_header_are_refused_without_showing_them(
    creds: Credentials,
) -> None:
    with (
        serving(respond("200 OK", GOOD_BODY)) as (endpoint, seen),
        pytest.raises(ValueError) as info,
    ):
        ModerationClient(endpoint, creds)
    assert seen == []
    assert "token-line-one" not in str(info.value) and "s3cr3t" not in str(info.value)


@pytest.mark.parametrize(
    "endpoint", ["http://green-cip.ap-southeast-1.aliyuncs.com", "http://10.0.0.8:8080"]
)
def test_plain_http_off_loopback_needs_an_explicit_opt_in(endpoint: str) -> None:
    with pytest.raises(ValueError, match="IMGMOD_ALLOW_HTTP"):
        ModerationClient(endpoint, CREDS)
    ModerationClient(endpoint, CREDS, allow_http=True).close()
    for loopback in ("http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080"):
        ModerationClient(loopback, CREDS).close()
