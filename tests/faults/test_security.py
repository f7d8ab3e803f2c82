"""Security: the AccessKey secret never leaks, hostile text is stored and exported verbatim,
and every service the tests start listens on loopback only.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from pg_cluster import ClusterUnavailable, PgCluster, private_pg_cluster

from tests.support import Emulator, run_imgmod, wait_until
from worker import store
from worker.emulator.samples import sample_bytes_for_path
from worker.processes import (
    ImageServerHandle,
    private_redis,
    running_emulator,
    running_image_server,
    start_worker,
)
from worker.urls import normalize_url

pytestmark = pytest.mark.service

KEY_ID = "myid"


# ------------------------------------------------------------------ (a) the secret never leaks


@pytest.fixture
def secret() -> str:
    return f"Sekr1t{uuid.uuid4().hex}Zq"


@pytest.fixture
def emulator_with_output(secret: str, tmp_path: Path) -> Iterator[tuple[Emulator, Path]]:
    """The emulator accepting only ``myid:<secret>``, its stdout and stderr kept in a file."""
    out_path = tmp_path / "emulator.out"
    with out_path.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "worker.emulator",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--key",
                f"{KEY_ID}:{secret}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:

        def announced() -> bool:
            return "http://" in out_path.read_text(errors="replace")

        wait_until(announced, 20, "the emulator to announce its address")
        line = next(x for x in out_path.read_text().splitlines() if "http://" in x)
        url = line.rsplit(" ", 1)[-1].strip()
        yield Emulator(url=url, process=process, access_key_id=KEY_ID), out_path
    finally:
        process.terminate()
        process.wait(10)


def _dump_database(url: str) -> str:
    """Every row of every table, as text."""
    engine = store.make_engine(url)
    try:
        chunks = []
        with engine.connect() as conn:
            for table in sa.inspect(conn).get_table_names():
                for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):
                    chunks.append(f"{table}: {tuple(row)!r}")
        return "\n".join(chunks)
    finally:
        engine.dispose()


def _dump_redis(url: str) -> str:
    """Every key and value of the broker (queued messages, limiter, parked answers), as text."""
    client = redis.Redis.from_url(url)
    chunks = []
    for key in client.scan_iter():
        kind = client.type(key).decode()
        value: Any
        if kind == "string":
            value = client.get(key)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "set":
            value = client.smembers(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        else:
            value = kind
        chunks.append(f"{key!r}: {value!r}")
    client.close()
    return "\n".join(chunks)


def _leaks(secret: str, text: str) -> list[str]:
    """Forms of the secret that appear in ``text``: whole, or any 12-character piece of it."""
    pieces = {secret} | {secret[i : i + 12] for i in range(len(secret) - 11)}
    return sorted(p for p in pieces if p in text)


@pytest.mark.slow
def test_the_secret_appears_in_no_log_output_table_or_broker_message_even_at_debug(
    secret: str,
    emulator_with_output: tuple[Emulator, Path],
    image_server: ImageServerHandle,
    pg_url: str,
    tmp_path: Path,
) -> None:
    emulator, emulator_out = emulator_with_output
    with private_redis() as broker:
        env = {
            "IMGMOD_DATABASE_URL": pg_url,
            "IMGMOD_BROKER_URL": broker.url,
            "IMGMOD_ENDPOINT": emulator.url,
            "IMGMOD_LOG_LEVEL": "DEBUG",
            "IMGMOD_RETRY_PER_CODE": "405=1",
            "ALIBABA_CLOUD_ACCESS_KEY_ID": KEY_ID,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": secret,
        }
        outputs: dict[str, str] = {}

        def record(name: str, *args: str) -> subprocess.CompletedProcess[str]:
            done = run_imgmod(env, *args)
            outputs[name] = done.stdout + done.stderr
            return done

        assert record("upgrade", "db", "upgrade").returncode == 0
        lines = [image_server.image_url(i) for i in range(20)]
        base = image_server.url
        lines += [f"{base}/missing/1.png", f"{base}/text/1.txt", "ftp://x/y.png"]
        src = tmp_path / "urls.txt"
        src.write_text("\n".join(lines) + "\n")
        assert record("enqueue", "enqueue", str(src), "--job", "secret").returncode == 0
        queued_messages = _dump_redis(broker.url)  # the messages before any worker took them
        assert "imgmod" in queued_messages

        worker = start_worker(env, tmp_path / "worker.log", concurrency=8, loglevel="DEBUG")
        try:
            assert record("run", "run", str(src), "--job", "secret").returncode == 3
        finally:
            worker.terminate(timeout=30)
        # A wrong secret: the gateway refuses every call with its own error text.
        wrong_secret = secret[::-1]
        wrong = {**env, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": wrong_secret}
        wrong_worker = start_worker(wrong, tmp_path / "wrong.log", concurrency=2, loglevel="DEBUG")
        try:
            done = run_imgmod(wrong, "run", str(src), "--job", "wrong-secret")
            outputs["run-wrong-secret"] = done.stdout + done.stderr
            assert done.returncode == 3
        finally:
            wrong_worker.terminate(timeout=30)
        assert "SignatureDoesNotMatch" in _dump_database(pg_url)
        record("status", "status", "secret")
        record("status-json", "status", "--json")
        record("report", "report", "secret")
        record("report-json", "report", "secret", "--json")
        record("export-jsonl", "export", "secret", "--format", "jsonl")
        record("export-csv", "export", "secret", "--format", "csv")
        broker_after = _dump_redis(broker.url)

    assert "DEBUG" in worker.log()  # the worker really logged at DEBUG
    assert emulator.stats()["billed"] == 20
    texts = {
        **outputs,
        "worker log": worker.log(),
        "wrong-secret worker log": wrong_worker.log(),
        "emulator output": emulator_out.read_text(errors="replace"),
        "database": _dump_database(pg_url),
        "broker (queued)": queued_messages,
        "broker (after)": broker_after,
    }
    assert all(texts.values()), [k for k, v in texts.items() if not v]
    leaks = {
        name: _leaks(secret, text) + _leaks(wrong_secret, text) for name, text in texts.items()
    }
    assert {name: found for name, found in leaks.items() if found} == {}


# ------------------------------------------------------------------ (b) hostile text, verbatim

HOSTILE = [
    "'; DROP TABLE items; --",
    '" OR "1"="1',
    "$(touch /tmp/imgmod-pwned)",
    "`id`",
    "a'b\"c;d--e",
    "%27%22%3B",
    "\\'; SELECT pg_sleep(5); --",
]


def test_sql_and_shell_metacharacters_are_stored_and_exported_verbatim(
    pg_url: str, image_server: ImageServerHandle, tmp_path: Path
) -> None:
    oss_root = tmp_path / "oss"
    oss_key = "dir/it's; rm -rf $(pwd) `x` --.png"
    target = oss_root / "cn-beijing" / "my-bucket" / oss_key
    target.parent.mkdir(parents=True)
    target.write_bytes(sample_bytes_for_path("/img/7.png") or b"")
    job = "job'; DROP TABLE jobs; --$(id)"
    rows = []
    for i, text in enumerate(HOSTILE):
        query = f"?q={text}&i={i}".replace(" ", "%20")  # a raw space is no URL character
        rows.append(
            {"url": image_server.image_url(200 + i) + query, "referer": "https://r.example/" + text}
        )
    rows.append(
        {
            "ossBucketName": "my-bucket",
            "ossObjectName": oss_key,
            "ossRegionId": "cn-beijing",
            "referer": HOSTILE[0],
        }
    )
    src = tmp_path / "evil'; --$(id)`x`.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    with private_redis() as broker, running_emulator(oss_root=str(oss_root)) as emulator:
        from worker.emulator import TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET

        env = {
            "IMGMOD_DATABASE_URL": pg_url,
            "IMGMOD_BROKER_URL": broker.url,
            "IMGMOD_ENDPOINT": emulator.url,
            "ALIBABA_CLOUD_ACCESS_KEY_ID": TEST_ACCESS_KEY_ID,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": TEST_ACCESS_KEY_SECRET,
        }
        assert run_imgmod(env, "db", "upgrade").returncode == 0
        worker = start_worker(env, tmp_path / "worker.log", concurrency=8)
        try:
            run = run_imgmod(env, "run", str(src), "--job", job)
        finally:
            worker.terminate(timeout=30)
        assert run.returncode == 0, run.stdout + run.stderr + worker.log()[-3000:]
        jsonl = run_imgmod(env, "export", job, "--format", "jsonl")
        csv_out = run_imgmod(env, "export", job, "--format", "csv")
        assert emulator.stats()["billed"] == len(rows)

    assert not Path("/tmp/imgmod-pwned").exists()
    exported = [json.loads(line) for line in jsonl.stdout.splitlines()]
    from_csv = list(csv.DictReader(io.StringIO(csv_out.stdout)))
    engine = store.make_engine(pg_url)
    try:
        with engine.connect() as conn:
            stored = list(
                conn.execute(
                    sa.select(
                        store.items.c.image_url,
                        store.items.c.referer,
                        store.items.c.oss_object,
                        store.items.c.source,
                        store.items.c.state,
                    ).order_by(store.items.c.id)
                )
            )
            names = list(conn.execute(sa.select(store.jobs.c.name)).scalars())
    finally:
        engine.dispose()

    assert names == [job]
    assert len(stored) == len(exported) == len(from_csv) == len(rows)
    for given, row, out, out_csv in zip(rows, stored, exported, from_csv, strict=True):
        assert row.state == "done" and out["status"] == "done"
        assert row.source == str(src) == out["source"] == out_csv["source"]
        assert row.referer == given["referer"] == out["referer"] == out_csv["referer"]
        if "url" in given:
            expected = normalize_url(given["url"])
            assert row.image_url == expected == out["image_url"] == out_csv["image_url"]
            assert "'" not in given["url"] or "'" in expected  # quotes are not "escaped away"
        else:
            assert row.oss_object == oss_key == out["oss_object"] == out_csv["oss_object"]
        assert out["job"] == job == out_csv["job"]


# ------------------------------------------------------------------ (c) loopback only


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _hex_address(hex_ip: str) -> str:
    raw = bytes.fromhex(hex_ip)
    if len(raw) == 4:
        return ".".join(str(b) for b in raw[::-1])
    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]  # each 32-bit word little-endian
    return ":".join(b.hex() for b in words)


def listening_addresses(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state that process ``pid`` holds."""
    inodes = _socket_inodes(pid)
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:
                hex_ip, hex_port = local.split(":")
                found.append((_hex_address(hex_ip), int(hex_port, 16)))
    return found


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    try:
        with private_pg_cluster() as pg:
            yield pg
    except ClusterUnavailable as exc:
        pytest.skip(str(exc))


def test_the_emulator_image_server_redis_postgres_and_workers_listen_on_loopback_only(
    cluster: PgCluster, tmp_path: Path
) -> None:
    from worker.emulator import TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET

    with (
        running_emulator() as emulator,
        running_image_server() as image_server,
        private_redis() as broker,
    ):
        env = {
            "IMGMOD_DATABASE_URL": f"sqlite:///{tmp_path / 'imgmod.db'}",
            "IMGMOD_BROKER_URL": broker.url,
            "IMGMOD_ENDPOINT": emulator.url,
            "ALIBABA_CLOUD_ACCESS_KEY_ID": TEST_ACCESS_KEY_ID,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": TEST_ACCESS_KEY_SECRET,
        }
        worker = start_worker(env, tmp_path / "worker.log", concurrency=2)
        try:
            assert broker.process is not None
            servers = {
                "emulator": emulator.process.pid,
                "image server": image_server.process.pid,
                "redis": broker.process.pid,
                "postgres": int((cluster.data_dir / "postmaster.pid").read_text().split()[0]),
            }
            listening = {name: listening_addresses(pid) for name, pid in servers.items()}
            worker_listens = listening_addresses(worker.process.pid)
        finally:
            worker.terminate(timeout=30)
    print(f"\nlistening sockets: {listening}")
    for name, addresses in listening.items():
        assert addresses, f"{name} listens on nothing we can see"
        assert {address for address, _ in addresses} == {"127.0.0.1"}, (name, addresses)
    assert worker_listens == []  # a worker only connects out


# ---------------------------------------------------------- (d) hostile text, bad credentials


def test_a_newline_in_the_sts_token_stops_the_worker_with_one_line_and_exit_2(
    tmp_path: Path,
) -> None:
    """Before: the HTTP library quoted the token into every item's last_error and the log, past
    the redaction, and retried each item 8 times as a network fault."""
    token = "CAISsts-token-line-one\nX-Injected-Header: evil"
    with private_redis() as broker:
        env = {
            "IMGMOD_DATABASE_URL": f"sqlite:///{tmp_path / 'imgmod.db'}",
            "IMGMOD_BROKER_URL": broker.url,
            "ALIBABA_CLOUD_ACCESS_KEY_ID": KEY_ID + "-key-id",
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "Sekr1t-not-shown-0123",
            "ALIBABA_CLOUD_SECURITY_TOKEN": token,
        }
        assert run_imgmod(env, "db", "upgrade").returncode == 0
        result = run_imgmod(env, "worker", timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "ALIBABA_CLOUD_SECURITY_TOKEN" in output and "line break at position 22" in output
    assert "Traceback" not in output and len(result.stderr.strip().splitlines()) == 1
    assert "CAISsts" not in output and "X-Injected" not in output and "Sekr1t" not in output


def test_a_csv_header_cannot_forge_a_log_line(redis_url: str, tmp_path: Path) -> None:
    forged = "[2026-11-25 03:12:45,101: ERROR/MainProcess] imgmod.task: all items deleted"
    src = tmp_path / "in.csv"
    header = b'url,"evil\r\x1b[2K' + forged.encode() + b'\x1b[8m"\n'  # quoted: CSV allows \r
    src.write_bytes(header + b"https://example.com/a.png,x\n")
    env = {
        "IMGMOD_DATABASE_URL": f"sqlite:///{tmp_path / 'imgmod.db'}",
        "IMGMOD_BROKER_URL": redis_url,
        "IMGMOD_LOG_FORMAT": "text",
    }
    assert run_imgmod(env, "db", "upgrade").returncode == 0
    result = run_imgmod(env, "enqueue", str(src), "--job", "forge")
    assert "\r" not in result.stderr and "\x1b" not in result.stderr
    lines = result.stderr.splitlines()
    assert not any(line.startswith("[2026-11-25 03:12:45,101: ERROR") for line in lines), lines
    assert any("\\r\\x1b[2K" + forged in line for line in lines), lines  # shown, escaped
