"""The bad-input corpus: every kind of broken line a real archive holds, through a whole job.

``tests/data/bad_inputs.{txt,csv,jsonl}`` hold one case per line and
``tests/data/bad_inputs.expected.json`` says what each line must become: skipped, ``rejected``
naming its line, field and reason, or moderated. Lines that cannot live in a text file in the
repository (binary, NUL, invalid UTF-8, 10 MB) are ``@@NAME@@`` markers expanded here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from tests.support import Stack, open_stack, run_imgmod, running_emulator, stack_env
from worker import store
from worker.processes import ImageServerHandle, PrivateRedis, private_redis
from worker.sources import Accepted, Rejected, read_inputs

DATA = Path(__file__).resolve().parent.parent / "data"
MANIFEST = json.loads((DATA / "bad_inputs.expected.json").read_text(encoding="utf-8"))
CORPUS = tuple(MANIFEST["files"])
MARKERS: dict[bytes, bytes] = {
    b"@@BINARY@@": bytes(range(0x80, 0x100)) + b"\x1b[0m\x7f",
    b"@@NUL@@": b"\x00",
    b"@@BADUTF8@@": b"\xc3\x28",
    b"@@10MB@@": b"http://example.com/" + b"a" * (10 << 20),
    b"@@LONGPATH@@": b"a" * 2100,
    b"@@BEL@@": b"\x07",
    b"@@A65@@": b"a" * 65,
    b"@@REF257@@": b"https://ref.example/" + b"r" * 240,
    b"@@DEEP@@": b"[" * 100_000 + b"]" * 100_000,
}


def expand_corpus(directory: Path, images_url: str) -> list[Path]:
    """Write each corpus file into ``directory`` with its placeholders and markers expanded."""
    assert set(MARKERS) == {m.encode() for m in MANIFEST["markers"]}
    paths = []
    for name in CORPUS:
        data = (DATA / name).read_bytes().replace(b"{images}", images_url.encode())
        for marker, value in MARKERS.items():
            data = data.replace(marker, value)
        path = directory / name
        path.write_bytes(data)
        paths.append(path)
    return paths


def expected_good_lines(name: str) -> set[int]:
    spec = MANIFEST["files"][name]
    total = (DATA / name).read_bytes().count(b"\n")
    return set(range(1, total + 1)) - set(spec["skipped"]) - {int(n) for n in spec["rejected"]}


def test_the_corpus_covers_at_least_30_kinds_of_bad_line() -> None:
    rejected = sum(len(spec["rejected"]) for spec in MANIFEST["files"].values())
    skipped = sum(len(spec["skipped"]) for spec in MANIFEST["files"].values())
    assert rejected + skipped >= 30
    for name in CORPUS:
        assert expected_good_lines(name), f"{name} has no good line around its bad ones"


def test_the_reader_turns_every_corpus_line_into_what_the_manifest_says(tmp_path: Path) -> None:
    """Pure and quick: no services, just the producer's reader over the expanded corpus."""
    paths = expand_corpus(tmp_path, "http://127.0.0.1:9")
    for path in paths:
        spec = MANIFEST["files"][path.name]
        records = list(read_inputs([str(path)]))
        rejected = {r.line: r for r in records if isinstance(r, Rejected)}
        accepted = {r.line for r in records if isinstance(r, Accepted)}
        assert accepted == expected_good_lines(path.name), path.name
        assert set(rejected) == {int(n) for n in spec["rejected"]}, path.name
        for line, (field, fragment) in spec["rejected"].items():
            got = rejected[int(line)]
            assert (got.field, fragment in got.reason) == (field, True), (path.name, line, got)
            assert "\x00" not in got.raw and len(got.raw) <= 2000


@pytest.fixture
def corpus_stack(
    database_url: str, broker: PrivateRedis, image_server: ImageServerHandle, tmp_path: Path
) -> Iterator[Stack]:
    with running_emulator(qps=1000) as emulator:
        env = stack_env(database_url, broker.url, emulator)
        with open_stack(env, tmp_path, emulator, image_server, broker=broker) as stack:
            yield stack


def _rows(url: str, sql: str) -> list[Any]:
    engine = store.make_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(sql)))
    finally:
        engine.dispose()


@pytest.mark.service
def test_every_bad_line_is_rejected_by_name_and_every_good_line_around_it_is_moderated(
    corpus_stack: Stack, tmp_path: Path
) -> None:
    env = corpus_stack.env
    paths = expand_corpus(tmp_path, corpus_stack.images.url)
    worker = corpus_stack.start_worker(concurrency=8)
    try:
        run = corpus_stack.imgmod(
            "run", *map(str, paths), "--job", "corpus", "--stall-seconds", "60"
        )
    finally:
        worker.terminate(timeout=30)

    assert run.returncode == 3, run.stdout + run.stderr
    assert "Traceback" not in run.stderr + worker.log()
    rows = _rows(
        env["IMGMOD_DATABASE_URL"],
        "SELECT source, line, state, last_error, image_url FROM items ORDER BY id",
    )
    by_line = {(Path(r.source).name, r.line): r for r in rows}
    assert len(by_line) == len(rows)  # one row per line, never two
    good = 0
    for name, spec in MANIFEST["files"].items():
        for line, (field, fragment) in spec["rejected"].items():
            row = by_line.pop((name, int(line)))
            assert row.state == "rejected", (name, line, row)
            assert row.last_error.startswith(f"line {line}: {field}: "), (name, line, row)
            assert fragment in row.last_error, (name, line, row)
        for line in expected_good_lines(name):
            row = by_line.pop((name, line))
            assert row.state == "done", (name, line, row)
            assert row.image_url.isascii()  # non-ASCII percent-encoded, never rejected
            good += 1
    assert by_line == {}, f"rows for lines that should make none: {sorted(by_line)}"
    rejected = sum(len(spec["rejected"]) for spec in MANIFEST["files"].values())
    assert f"{good} accepted, 0 duplicate, {rejected} rejected" in run.stdout
    stats = corpus_stack.emulator.stats()
    assert stats["billed"] == good and max(stats["billed_by_image"].values()) == 1


@pytest.fixture(scope="module")
def broker_url() -> Iterator[str]:
    with private_redis() as broker:
        yield broker.url


@pytest.mark.service
@pytest.mark.parametrize("command", ["enqueue", "run"])
@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--service", "baselineCheck", "'baselineCheck' is not a moderation service"),
        ("--service", "BASELINECHECK_GLOBAL", "did you mean baselineCheck_global?"),
        ("--info-type", "customImage,faces", "'faces' is not a valid value"),
        ("--info-type", "textinimage", "did you mean textInImage?"),
    ],
)
def test_an_unknown_service_or_info_type_exits_2_with_the_fix_and_enqueues_nothing(
    broker_url: str,
    tmp_path: Path,
    command: str,
    option: str,
    value: str,
    message: str,
) -> None:
    env = {
        "IMGMOD_DATABASE_URL": f"sqlite:///{tmp_path / 'imgmod.db'}",
        "IMGMOD_BROKER_URL": broker_url,
        "IMGMOD_ENDPOINT": "http://127.0.0.1:9",
    }
    src = tmp_path / "ok.txt"
    src.write_text("http://127.0.0.1:9/img/1.png\n")

    out = run_imgmod(env, command, str(src), "--job", "refused", option, value, timeout=60)

    assert out.returncode == 2, out.stdout + out.stderr
    assert message in out.stderr
    assert f"{option}:" in out.stderr  # names the option as the user typed it
    assert "Traceback" not in out.stderr
    assert _rows(env["IMGMOD_DATABASE_URL"], "SELECT count(*) FROM jobs")[0][0] == 0
    assert _rows(env["IMGMOD_DATABASE_URL"], "SELECT count(*) FROM items")[0][0] == 0
    assert redis.Redis.from_url(env["IMGMOD_BROKER_URL"]).dbsize() == 0
