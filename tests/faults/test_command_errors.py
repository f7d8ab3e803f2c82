"""Every command, walked through what goes wrong on a real host: no database, no broker, wrong
credentials, an unreadable input, a directory, a missing file, a job name taken by another
service. Each ends in one line on stderr naming what and where (passwords masked) and exit 2,
never a traceback (``imgmod --debug`` adds it), and writes nothing it shouldn't."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support import run_imgmod, wait_until
from worker import store
from worker.processes import free_port, redis_reachable

pytestmark = pytest.mark.service

PASSWORD = "s3cret-pw"  # never to be printed
GOOD_LINE = "http://127.0.0.1:9/img/1.png\n"


def one_line_error(out: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The single stderr line of a refused command; fails on a traceback or a second line."""
    assert out.returncode == code, out.stdout + out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert PASSWORD not in out.stderr + out.stdout
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    return lines[0]


def count(url: str, table: str) -> int:
    engine = store.make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "urls.txt"
    path.write_text(GOOD_LINE)
    return path


@pytest.fixture
def ready_db(sqlite_url: str, redis_url: str) -> dict[str, str]:
    """A migrated database with a job ``j`` holding one failed row, and a working broker."""
    env = {"IMGMOD_DATABASE_URL": sqlite_url, "IMGMOD_BROKER_URL": redis_url}
    assert run_imgmod(env, "db", "upgrade").returncode == 0
    engine = store.make_engine(sqlite_url)
    job = store.get_or_create_job(engine, "j", "baselineCheck_global", "")
    row = store.NewItem(
        "url", "https://e.com/1.png", "https://e.com/1.png", None, None, None, None, None,
        "in.txt", 1, "pending",
    )  # fmt: skip
    (item_id,) = store.insert_items(engine, job.id, [row])
    store.claim_item(engine, item_id, "w", 60)
    store.record_failure(engine, item_id, "w", "404", "not found", "E404")
    engine.dispose()
    return env


# --------------------------------------------------------------------------- no database

NO_DB_COMMANDS = [
    ["status"],
    ["status", "j", "--json"],
    ["wait", "j", "--timeout", "5"],
    ["resume", "j"],
    ["retry", "j"],
    ["export", "j"],
    ["report", "j"],
    ["db", "upgrade"],
    ["db", "current"],
    ["enqueue", "{src}", "--job", "j"],
    ["run", "{src}", "--job", "j"],
    ["worker"],
]


@pytest.mark.parametrize("argv", NO_DB_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_an_unreachable_database_is_one_line_naming_the_masked_url_and_exit_2(
    argv: list[str], source: Path, redis_url: str
) -> None:
    port = free_port()  # nothing listens there
    env = {
        "IMGMOD_DATABASE_URL": f"postgresql://imgmod:{PASSWORD}@127.0.0.1:{port}/imgmod",
        "IMGMOD_BROKER_URL": redis_url,
    }
    out = run_imgmod(env, *[a.format(src=source) for a in argv], timeout=60)
    line = one_line_error(out)
    assert f"cannot reach the database postgresql://imgmod:***@127.0.0.1:{port}/imgmod" in line
    assert "IMGMOD_DATABASE_URL" in line  # what to check


def test_a_database_user_the_server_refuses_is_named_with_the_reason(pg_url: str) -> None:
    wrong = pg_url.replace("://root@", f"://nosuchrole:{PASSWORD}@")
    out = run_imgmod({"IMGMOD_DATABASE_URL": wrong}, "status", timeout=60)
    line = one_line_error(out)
    assert "nosuchrole:***@" in line and 'role "nosuchrole" does not exist' in line


def test_debug_adds_the_traceback_to_the_same_one_line_explanation() -> None:
    env = {"IMGMOD_DATABASE_URL": f"postgresql://u:{PASSWORD}@127.0.0.1:{free_port()}/x"}
    out = run_imgmod(env, "--debug", "status", timeout=60)
    assert out.returncode == 2
    assert "Traceback" in out.stderr and "OperationalError" in out.stderr
    assert out.stderr.rstrip().splitlines()[-1].startswith("Error: cannot reach the database")


# --------------------------------------------------------------------------- no broker

NO_BROKER_COMMANDS = [
    ["enqueue", "{src}", "--job", "new"],
    ["run", "{src}", "--job", "new"],
    ["resume", "j"],
    ["retry", "j"],
    ["worker"],
]


@pytest.mark.parametrize("argv", NO_BROKER_COMMANDS, ids=lambda a: a[0])
def test_an_unreachable_broker_is_one_line_exit_2_and_nothing_is_written(
    argv: list[str], ready_db: dict[str, str], source: Path
) -> None:
    port = free_port()
    env = {**ready_db, "IMGMOD_BROKER_URL": f"redis://:{PASSWORD}@127.0.0.1:{port}/0"}
    db = env["IMGMOD_DATABASE_URL"]
    before = count(db, "items")
    out = run_imgmod(
        env,
        *[a.format(src=source) for a in argv],
        timeout=60,
    )
    line = one_line_error(out)
    assert f"cannot reach the broker redis://:***@127.0.0.1:{port}/0" in line
    assert "IMGMOD_BROKER_URL" in line and "Nothing was written" in line
    assert count(db, "jobs") == 1 and count(db, "items") == before  # no job "new", no rows
    engine = store.make_engine(db)
    with engine.connect() as conn:  # retry did not reset the failed row
        assert conn.execute(sa.text("SELECT state FROM items")).scalar_one() == "failed"
    engine.dispose()


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server that wants a password (``requirepass``), on a free loopback port."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    args = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    args += ["--appendonly", "no", "--dir", str(tmp_path), "--requirepass", "the-right-one"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://:the-right-one@127.0.0.1:{port}/0"
    try:
        wait_until(lambda: redis_reachable(url), 10, "the password-protected redis-server")
        yield f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    finally:
        process.kill()
        process.wait(10)


def test_a_broker_refusing_the_password_is_one_line_and_enqueues_nothing(
    sqlite_url: str, locked_redis: str, source: Path
) -> None:
    env = {"IMGMOD_DATABASE_URL": sqlite_url, "IMGMOD_BROKER_URL": locked_redis}
    out = run_imgmod(env, "enqueue", str(source), "--job", "locked", timeout=60)
    line = one_line_error(out)
    assert "cannot reach the broker redis://:***@127.0.0.1:" in line
    assert "invalid username-password pair" in line
    assert count(sqlite_url, "jobs") == 0


def test_a_worker_without_an_access_key_says_which_variables_to_set(
    ready_db: dict[str, str],
) -> None:
    env = {**ready_db, "ALIBABA_CLOUD_ACCESS_KEY_ID": "", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": ""}
    line = one_line_error(run_imgmod(env, "worker", timeout=60))
    assert "ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET" in line


# --------------------------------------------------------------------------- inputs


@pytest.mark.parametrize("command", ["enqueue", "run"])
def test_a_missing_input_creates_no_job(
    command: str, sqlite_url: str, redis_url: str, source: Path, tmp_path: Path
) -> None:
    env = {"IMGMOD_DATABASE_URL": sqlite_url, "IMGMOD_BROKER_URL": redis_url}
    assert run_imgmod(env, "db", "upgrade").returncode == 0
    missing = tmp_path / "missing.txt"
    out = run_imgmod(env, command, str(source), str(missing), "--job", "a", timeout=60)
    line = one_line_error(out)
    assert f"{missing}: input file not found" in line
    assert count(sqlite_url, "jobs") == 0 and count(sqlite_url, "items") == 0


@pytest.mark.parametrize("command", ["enqueue", "run"])
def test_a_directory_input_is_one_line_with_the_fix(
    command: str, sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    env = {"IMGMOD_DATABASE_URL": sqlite_url, "IMGMOD_BROKER_URL": redis_url}
    (tmp_path / "archive").mkdir()
    out = run_imgmod(env, command, str(tmp_path / "archive"), "--job", "a", timeout=60)
    line = one_line_error(out)
    assert "archive: is a directory" in line and "archive/*.txt" in line


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory anyone may enter (pytest's tmp_path is private to its owner)."""
    path = Path(tempfile.mkdtemp(prefix="imgmod-unreadable-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_an_unreadable_input_is_refused_before_the_database_is_touched(
    shared_dir: Path, tmp_path: Path
) -> None:
    secret = shared_dir / "urls.txt"
    secret.write_text(GOOD_LINE)
    secret.chmod(0o000)
    argv = ["run", str(secret), "--job", "a"]
    env = {"IMGMOD_DATABASE_URL": f"sqlite:///{tmp_path / 'never' / 'created.db'}"}
    if os.geteuid() == 0:  # root reads anything: run as nobody, as an operator's cron would
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv to drop privileges")
        drop = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
        out = run_imgmod({**env, "HOME": "/tmp"}, *argv, timeout=60, prefix=drop)
    else:
        out = run_imgmod(env, *argv, timeout=60)
    line = one_line_error(out)
    assert f"{secret}: cannot be read (permission denied)" in line
    assert not (tmp_path / "never").exists()


def test_a_job_name_taken_by_another_service_is_one_line_and_adds_nothing(
    sqlite_url: str, redis_url: str, source: Path
) -> None:
    env = {"IMGMOD_DATABASE_URL": sqlite_url, "IMGMOD_BROKER_URL": redis_url}
    assert run_imgmod(env, "enqueue", str(source), "--job", "taken").returncode == 0
    other = source.with_name("more.txt")
    other.write_text("http://127.0.0.1:9/img/2.png\n")
    out = run_imgmod(
        env, "enqueue", str(other), "--job", "taken", "--service", "aigcDetector_global"
    )
    line = one_line_error(out)
    assert "job 'taken' already exists" in line
    assert "'baselineCheck_global', not 'aigcDetector_global'" in line
    assert count(sqlite_url, "items") == 1


def test_db_upgrade_to_an_unknown_revision_is_one_line_and_exit_2(sqlite_url: str) -> None:
    out = run_imgmod({"IMGMOD_DATABASE_URL": sqlite_url}, "db", "upgrade", "--revision", "nope")
    line = one_line_error(out)
    assert "--revision nope" in line and "Can't locate revision" in line, line
