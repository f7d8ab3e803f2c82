"""Starting the pieces of a local stack as real processes: Celery workers, a private Redis, the
emulator of the API and the sample image server.

Used by ``imgmod worker`` and ``imgmod demo``, the integration and fault tests, and the
benchmarks, so that all of them exercise the same processes a user runs. Every service binds
loopback only, on a port the OS chose, and every wait for one to come up has a deadline.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar

T = TypeVar("T")

# seconds for the emulator or image server to announce and answer: a deadline, not a wait (it
# returns as soon as they answer); 20 s was missed once on this 2-core box under a full test run
# plus another suite, since the emulator now also imports the OSS side.
SERVER_START_DEADLINE = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that; TimeoutError
    naming ``what`` after ``timeout`` s. An exception from ``predicate`` ends the wait."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
    return value


def redis_reachable(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        ok = bool(client.ping())
        client.close()
        return ok
    except Exception:  # noqa: BLE001 - any failure means "not usable"
        return False


# -- Redis -----------------------------------------------------------------------------------


@dataclass
class PrivateRedis:
    """A ``redis-server`` of our own, on a free loopback port, keeping nothing on disk."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed")
        self.process = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: redis_reachable(self.url), 10, f"redis-server on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        """Kill and start again: without persistence every queued message is gone."""
        self.stop()
        self.start()


@contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    with tempfile.TemporaryDirectory(prefix="imgmod-redis-") as tmp:
        server = PrivateRedis(port=free_port(), directory=Path(tmp))
        server.start()
        try:
            yield server
        finally:
            server.stop()


# -- Celery workers --------------------------------------------------------------------------


def worker_command(
    concurrency: int, loglevel: str = "INFO", hostname: str | None = None
) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker",
        "worker",
        "--pool",
        "threads",
        "--concurrency",
        str(concurrency),
        "--loglevel",
        loglevel,
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    if hostname:
        argv += ["--hostname", hostname]
    return argv


def exec_worker(argv: list[str], settings_env: Mapping[str, str]) -> NoReturn:
    """Replace this process with the worker ``argv`` (:func:`worker_command`), in our
    environment with ``settings_env`` on top: ``imgmod worker`` passes the settings it resolved
    from its own options, which the worker's app reads at import."""
    os.execve(argv[0], argv, {**os.environ, **settings_env})  # noqa: S606


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def ready(self) -> bool:
        return " ready." in self.log()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def terminate(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return int(self.process.returncode)


def start_worker(
    env: Mapping[str, str],
    log_path: Path,
    concurrency: int = 32,
    loglevel: str = "INFO",
    hostname: str | None = None,
    wait_ready: float = 60,
) -> WorkerProcess:
    """Start ``celery -A worker worker`` with ``env`` added to ours; wait until it is ready."""
    full_env = dict(os.environ)
    full_env.update(env)
    handle = log_path.open("wb")
    process = subprocess.Popen(
        worker_command(concurrency, loglevel, hostname),
        env=full_env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    handle.close()
    proc = WorkerProcess(process=process, log_path=log_path)
    if wait_ready:

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(
                    f"worker exited with {process.returncode}:\n{proc.log()[-3000:]}"
                )
            return proc.ready()

        wait_until(ready, wait_ready, "the Celery worker to be ready")
    return proc


# -- the emulator and the sample image server --------------------------------------------------


class ServerStartError(RuntimeError):
    """The emulator or image server exited, or did not announce itself, before the deadline."""


@dataclass(frozen=True)
class EmulatorHandle:
    """A running emulator; ``url`` is the endpoint (``http://127.0.0.1:PORT``), ``oss_url`` its
    OSS endpoint (path-style, what ``IMGMOD_OSS_ENDPOINT`` takes)."""

    url: str
    process: subprocess.Popen[bytes] = field(repr=False)
    oss_url: str = ""

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


def _written(log: IO[bytes]) -> bytes:
    """Everything written to ``log`` so far, read with ``pread`` so the file offset is untouched.

    The child's stdout is this very open file (Popen dup2s the descriptor, and a dup shares its
    offset). A ``seek(0)`` here that lands between two of the child's writes makes the second
    write land at offset 0, over the first: the emulator's "listening on" line was overwritten
    by its OSS line that way, and the parent waited 60 s for a line that was gone.
    """
    fd = log.fileno()
    size = os.fstat(fd).st_size
    chunks: list[bytes] = []
    offset = 0
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _announced_url(log: IO[bytes], process: subprocess.Popen[bytes], banner: str = "") -> str:
    """The ``http://HOST:PORT`` the server printed on its stdout after ``banner`` (any line with
    a URL when empty), or "" while it has not."""
    for line in _written(log).decode(errors="replace").splitlines():
        if "http://" in line and line.startswith(banner):
            return line.rsplit(" ", 1)[-1].strip()
    if process.poll() is not None:
        raise ServerStartError(f"server exited with {process.returncode} before it was ready")
    return ""


def _answers(url: str, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise ServerStartError(f"server exited with {process.returncode} before it answered")
    try:
        with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - our own http server
            return True
    except urllib.error.HTTPError:
        return True  # it answers HTTP: ready
    except OSError:
        return False


@contextmanager
def _running(
    args: list[str], probe_path: str, banner: str = ""
) -> Iterator[tuple[str, subprocess.Popen[bytes], IO[bytes]]]:
    """``python -m worker.emulator ARGS`` until the block ends; yields its announced URL (the
    line starting with ``banner``) once ``probe_path`` answers, the process and its stdout.
    Its stderr's tail is in the error when it fails to start."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "worker.emulator", *args],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            cwd=str(Path(__file__).resolve().parents[1]),
        )
        try:
            deadline = time.monotonic() + SERVER_START_DEADLINE
            try:
                url = wait_until(
                    lambda: _announced_url(out, process, banner),
                    SERVER_START_DEADLINE,
                    "its address",
                    0.02,
                )
                left = max(0.0, deadline - time.monotonic())
                wait_until(lambda: _answers(url + probe_path, process), left, url, 0.02)
            except (ServerStartError, TimeoutError) as exc:
                tail = _written(err).decode(errors="replace")[-2000:]
                raise ServerStartError(f"server did not start: {exc}; stderr:\n{tail}") from None
            yield url, process, out
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
    options.setdefault("oss_port", 0)
    args = emulator_args(options)
    with _running(args, "/__emulator__/health", "emulator listening on") as (url, process, out):
        # announced on the line right after the API's, before the health probe could answer
        oss_url = _announced_url(out, process, "emulator oss listening on")
        yield EmulatorHandle(url=url, process=process, oss_url=oss_url)


@contextmanager
def running_image_server() -> Iterator[ImageServerHandle]:
    """Run the sample image server on a free port."""
    args = ["sample-images", "--host", "127.0.0.1", "--port", "0"]
    with _running(args, "/img/0.png") as (url, process, _out):
        yield ImageServerHandle(url=url, process=process)
