"""``imgmod act --action webhook``: one signed JSON event per image to a real HTTP receiver,
which verifies every signature; 5xx answers retried with backoff, a 4xx final, every delivery
recorded, a rerun sending only what was not delivered, and the secret nowhere."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sqlalchemy as sa

from tests.support import run_imgmod
from tests.support.acting import decided_job
from worker import store
from worker.store.schema import events, webhook_deliveries
from worker.webhook import verify

pytestmark = pytest.mark.service

SECRET = "whsec-test-0123456789-abcdef"
TOKEN = "tok-in-the-query-987"  # a credential in the URL: never recorded or printed
URLS = [f"https://img.example/{n}.jpg" for n in range(6)]


@dataclass
class Receiver:
    """A small real HTTP server: answers 503 to the first POST of each ``flaky`` image and 400
    to every POST of a ``refused`` one; keeps every event it received, and whether its
    signature verified."""

    url: str = ""
    flaky: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)
    received: list[tuple[dict[str, Any], bool]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(flaky={URLS[1]}, refused={URLS[2]})

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            event = json.loads(body)
            headers = {name: self.headers[name] for name in self.headers}
            good = verify(SECRET.encode(), headers, body, time.time()) and self.path.endswith(
                f"?token={TOKEN}"
            )  # signed, and posted to the URL as given
            image = event["reference"].get("image_url")
            with state.lock:
                first = all(e["delivery"] != event["delivery"] for e, _ in state.received)
                state.received.append((event, good))
            flaky = image in state.flaky and first
            status = 400 if image in state.refused else 503 if flaky else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/imgmod"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def test_every_image_gets_one_signed_event_retried_on_5xx_and_recorded(
    receiver, database_url
) -> None:
    store.upgrade(database_url)
    engine = store.ensure_schema(database_url)
    refs: list[tuple[str, str] | str] = [*URLS, ("bucket-a", "x.png")]
    decided = {n: "block" for n in range(len(refs))} | {5: "pass"}
    decided_job(engine, "hooks", refs, decided)
    env = {"IMGMOD_DATABASE_URL": database_url, "IMGMOD_WEBHOOK_SECRET": SECRET}
    url = f"{receiver.url}?token={TOKEN}"
    act = ("act", "hooks", "--decision", "block", "--action", "webhook", "--url", url)

    refused = run_imgmod(env, *act)
    assert refused.returncode == 2 and "add --yes" in refused.stderr
    assert "6 events would be POSTed" in refused.stdout and receiver.received == []
    if database_url.startswith("sqlite"):  # the same check on either database: once is enough
        unsigned = run_imgmod({"IMGMOD_DATABASE_URL": database_url}, *act, "--yes")
        assert unsigned.returncode == 2 and "IMGMOD_WEBHOOK_SECRET" in unsigned.stderr
        assert "Traceback" not in unsigned.stderr and receiver.received == []

    sent = run_imgmod(env, *act, "--yes")
    assert sent.returncode == 3, sent.stderr  # the refused one
    assert "5 events delivered, 1 failed, 0 already delivered" in sent.stdout
    assert [line for line in sent.stderr.splitlines() if line] == [
        f"item 3: webhook to {receiver.url}?*** failed: HTTP 400"
    ]
    assert all(good for _, good in receiver.received), "a signature did not verify"
    images = [e["reference"].get("image_url") for e, _ in receiver.received]
    assert sorted(images, key=str) == sorted(
        [URLS[0], URLS[1], URLS[1], URLS[2], URLS[3], URLS[4], None], key=str
    )  # the flaky one twice (503, then 200); the passed one (URLS[5]) never
    oss_event = next(e for e, _ in receiver.received if "oss_bucket" in e["reference"])
    assert oss_event["reference"] == {
        "oss_bucket": "bucket-a", "oss_object": "x.png", "oss_region": "ap-southeast-1"
    }  # fmt: skip
    assert oss_event["decision"] == "block" and oss_event["policy_version"] == "1"
    with engine.connect() as conn:
        rows = {
            r.item_id: (r.state, r.attempts, r.last_status)
            for r in conn.execute(sa.select(webhook_deliveries))
        }
        logged = conn.execute(sa.select(events).where(events.c.kind == "webhook")).all()
    assert sorted(rows.values()) == sorted(
        [("delivered", 1, 200)] * 4 + [("delivered", 2, 200), ("failed", 1, 400)]
    )
    assert sorted(e.what for e in logged) == ["delivered"] * 5 + ["failed"]

    again = run_imgmod(env, *act, "--yes")  # only the refused one is sent again
    assert "0 events delivered, 1 failed, 5 already delivered" in again.stdout
    assert len(receiver.received) == 8
    with engine.connect() as conn:
        dump = " ".join(
            str(tuple(r))
            for table in (events, webhook_deliveries)
            for r in conn.execute(sa.select(table))
        )
    for text in (refused.stdout, sent.stdout, sent.stderr, again.stdout, again.stderr, dump):
        assert SECRET not in text and TOKEN not in text
