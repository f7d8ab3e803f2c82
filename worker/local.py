"""Starting the pieces of a local stack as real processes: a private Redis, Celery workers.

Used by ``imgmod demo``, the integration and fault tests, and the benchmarks, so that all of
them exercise the same processes a user runs. Every service binds loopback only.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll ``predicate`` until it holds; TimeoutError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def redis_reachable(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        ok = bool(client.ping())
        client.close()
        return ok
    except Exception:  # noqa: BLE001 - any failure means "not usable"
        return False


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


def run_imgmod(
    env: Mapping[str, str], *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run ``imgmod ARGS`` as a user would, with ``env`` added to ours; output captured."""
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
