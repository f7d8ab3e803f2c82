"""Every rejected line keeps its own row: `enqueue -` twice, or two urls.txt from two folders,
into one job keep both; the same unchanged file enqueued again adds nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support import run_imgmod
from worker import store

pytestmark = pytest.mark.service

BAD = "ftp://example.com/not-http.png"


@pytest.fixture
def env(database_url: str, redis_url: str) -> dict[str, str]:
    values = {"IMGMOD_DATABASE_URL": database_url, "IMGMOD_BROKER_URL": redis_url}
    assert run_imgmod(values, "db", "upgrade").returncode == 0
    return values


def rejected_rows(env: dict[str, str], job: str) -> list[sa.Row]:
    engine = store.make_engine(env["IMGMOD_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(
                    sa.text(
                        "SELECT i.source, i.line, i.last_error FROM items i "
                        "JOIN jobs j ON j.id = i.job_id "
                        "WHERE j.name = :job AND i.state = 'rejected' ORDER BY i.id"
                    ),
                    {"job": job},
                )
            )
    finally:
        engine.dispose()


def enqueue(env: dict[str, str], *args: str, stdin: str | None = None) -> None:
    """``imgmod enqueue ARGS`` as a user runs it, with ``stdin`` piped in."""
    out = run_imgmod(env, "enqueue", *args, stdin=stdin, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_two_stdin_runs_into_one_job_keep_both_rejected_lines(env) -> None:
    enqueue(env, "-", "--job", "piped", stdin=f"{BAD}\n")
    enqueue(env, "-", "--job", "piped", stdin=f"{BAD}\n")
    rows = rejected_rows(env, "piped")
    assert [(r.source, r.line) for r in rows] == [("-", 1), ("-", 1)]


def test_two_files_of_one_name_from_two_folders_keep_both_rejected_lines(
    env, tmp_path: Path
) -> None:
    for folder in ("monday", "tuesday"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "urls.txt").write_text(f"{BAD}\n")
    for folder in ("monday", "tuesday"):
        enqueue(env, str(tmp_path / folder / "urls.txt"), "--job", "daily")
    rows = rejected_rows(env, "daily")
    assert sorted(r.source for r in rows) == sorted(
        str(tmp_path / f / "urls.txt") for f in ("monday", "tuesday")
    )


def test_the_same_file_enqueued_again_adds_no_rejected_row(env, tmp_path: Path) -> None:
    src = tmp_path / "urls.txt"
    src.write_text(f"{BAD}\nhttps://example.com/ok.png\n")
    enqueue(env, str(src), "--job", "again")
    enqueue(env, str(src), "--job", "again")
    assert len(rejected_rows(env, "again")) == 1
    engine = store.make_engine(env["IMGMOD_DATABASE_URL"])
    try:
        job = store.get_job(engine, "again")
        assert job is not None and job.rejected == 1  # the job's counter agrees
    finally:
        engine.dispose()
