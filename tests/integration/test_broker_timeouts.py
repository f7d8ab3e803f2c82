"""A broker that accepts TCP connections but never answers (a hung Redis, a black-holing proxy)
must not hang the producer: bounded timeouts, then one clear line and exit 2."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import start_imgmod, wait_until
from worker import store

pytestmark = pytest.mark.service


@pytest.fixture
def silent_broker() -> Iterator[str]:
    """A loopback TCP server that accepts every connection and never sends a byte."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    finally:
        stop.set()
        thread.join(5)
        server.close()
        for conn in held:
            conn.close()


def test_enqueue_against_a_broker_that_never_answers_exits_2_with_one_line(
    silent_broker: str, sqlite_url: str, tmp_path: Path
) -> None:
    source = tmp_path / "urls.txt"
    source.write_text("http://127.0.0.1:9/a.png\nhttp://127.0.0.1:9/b.png\n")
    env = {
        "IMGMOD_DATABASE_URL": sqlite_url,
        "IMGMOD_BROKER_URL": silent_broker,
        "IMGMOD_BROKER_TIMEOUT": "1",
    }
    process = start_imgmod(env, "enqueue", str(source), "--job", "silent")
    try:
        wait_until(lambda: process.poll() is not None, 90, "imgmod enqueue to give up")
    finally:
        if process.poll() is None:
            process.kill()
        out, err = process.communicate(timeout=10)

    assert process.returncode == 2, out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert silent_broker.rsplit("/", 1)[0] in lines[0] and "IMGMOD_BROKER_URL" in lines[0], err
    assert "Traceback" not in err


def test_a_refill_against_a_broker_that_stops_answering_raises_and_keeps_rows_pending(
    silent_broker: str, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window's own broker calls are bounded too: BrokerUnavailable, no row taken."""
    from worker.app import make_app
    from worker.queue import BrokerUnavailable
    from worker.settings import load_settings
    from worker.window import Refiller

    monkeypatch.setenv("IMGMOD_BROKER_URL", silent_broker)
    monkeypatch.setenv("IMGMOD_BROKER_TIMEOUT", "1")
    engine = store.ensure_schema(sqlite_url)
    job = store.get_or_create_job(engine, "silent", "baselineCheck_global", "")
    row = store.NewItem(
        kind="url",
        ref_key="http://127.0.0.1:9/a.png",
        image_url="http://127.0.0.1:9/a.png",
        oss_bucket=None,
        oss_object=None,
        oss_region=None,
        data_id=None,
        referer=None,
        source="t.txt",
        line=1,
        state="pending",
    )
    store.insert_items(engine, job.id, [row])
    outcome: list[BaseException | int] = []

    def refill() -> None:
        try:
            outcome.append(Refiller(engine, make_app(load_settings()), window=100).top_up())
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome.append(exc)

    thread = threading.Thread(target=refill, daemon=True)
    thread.start()
    wait_until(lambda: bool(outcome), 90, "the refill to give up")
    counts = store.state_counts(engine, job.id)
    engine.dispose()

    assert isinstance(outcome[0], BrokerUnavailable), outcome
    assert "IMGMOD_BROKER_TIMEOUT=1s" in str(outcome[0])
    assert counts["pending"] == 1 and counts["queued"] == 0
