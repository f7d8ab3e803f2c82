"""Alembic migrations on SQLite and PostgreSQL: from empty to head, and schema checks."""

from __future__ import annotations

import hashlib
import shutil
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from worker import store
from worker.store import migrate

pytestmark = pytest.mark.service

TABLES = {"jobs", "items", "listings", "results", "result_labels", "alembic_version"}
# The newest migration this imgmod ships, and the one a later release would add on top of it.
HEAD = max(p.name.split("_", 1)[0] for p in (store.MIGRATIONS_DIR / "versions").glob("0*.py"))
NEXT = f"{int(HEAD) + 1:04d}"


def table_names(url: str) -> set[str]:
    engine = store.make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.fixture
def newer_migrations(tmp_path, monkeypatch) -> Path:
    """This imgmod's migrations plus the next one (NEXT), as a later release would ship it."""
    directory = tmp_path / "migrations"
    shutil.copytree(store.MIGRATIONS_DIR, directory, ignore=shutil.ignore_patterns("__pycache__"))
    (directory / "versions" / f"{NEXT}_later.py").write_text(
        f'revision = "{NEXT}"\ndown_revision = "{HEAD}"\nbranch_labels = None\n'
        "depends_on = None\n\n"
        "from alembic import op\nimport sqlalchemy as sa\n\n\n"
        "def upgrade():\n"
        '    op.create_table("later", sa.Column("id", sa.Integer, primary_key=True))\n\n\n'
        "def downgrade():\n"
        '    op.drop_table("later")\n'
    )
    return directory


def test_upgrade_from_empty_creates_the_schema_at_head(database_url):
    assert table_names(database_url) == set()
    store.upgrade(database_url)
    assert table_names(database_url) >= TABLES
    engine = store.make_engine(database_url)
    try:
        assert store.current_revision(engine) == store.head_revision() == HEAD
        store.check_schema(engine)
    finally:
        engine.dispose()
    store.upgrade(database_url)  # a second upgrade is a no-op


def test_the_tables_in_code_match_the_migrations(database_url):
    store.upgrade(database_url)
    engine = store.make_engine(database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, store.metadata) == []
    finally:
        engine.dispose()


def test_migrations_downgrade_to_empty_and_back(database_url):
    store.upgrade(database_url)
    engine = store.make_engine(database_url)
    try:
        with engine.begin() as conn:
            command.downgrade(migrate.alembic_config(conn), "base")
        assert table_names(database_url) == {"alembic_version"}
    finally:
        engine.dispose()
    store.upgrade(database_url)
    assert table_names(database_url) >= TABLES


def test_check_schema_refuses_an_unmigrated_database(database_url):
    engine = store.make_engine(database_url)
    try:
        with pytest.raises(store.SchemaError, match=r"no imgmod tables; run `imgmod db upgrade`"):
            store.check_schema(engine)
    finally:
        engine.dispose()


def test_check_schema_refuses_a_database_behind_head(database_url, newer_migrations, monkeypatch):
    store.upgrade(database_url)  # at HEAD
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", newer_migrations)  # this imgmod wants NEXT
    engine = store.make_engine(database_url)
    try:
        with pytest.raises(store.SchemaError, match=rf"behind {NEXT}; run `imgmod db upgrade`"):
            store.check_schema(engine)
        store.upgrade(database_url)
        store.check_schema(engine)
        assert "later" in table_names(database_url)
    finally:
        engine.dispose()


def test_check_schema_refuses_a_database_a_newer_imgmod_wrote(
    database_url, newer_migrations, monkeypatch
):
    with monkeypatch.context() as patch:
        patch.setattr(migrate, "MIGRATIONS_DIR", newer_migrations)
        store.upgrade(database_url)  # a newer release migrated it to NEXT
    engine = store.make_engine(database_url)
    try:
        with pytest.raises(store.SchemaError, match="newer imgmod wrote it"):
            store.check_schema(engine)
    finally:
        engine.dispose()


def test_a_missing_migrations_directory_says_what_to_do(sqlite_url, tmp_path, monkeypatch):
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", tmp_path / "worker" / "_migrations")
    with pytest.raises(store.SchemaError, match=r"_migrations is missing.*reinstall it"):
        store.upgrade(sqlite_url)
    assert table_names(sqlite_url) == set()


def test_password_never_appears_in_a_schema_error(pg_url):
    url = pg_url.replace("root@", "root:s3cr3t-pass@")
    engine = store.make_engine(url)
    try:
        with pytest.raises(store.SchemaError) as info:
            store.check_schema(engine)
    finally:
        engine.dispose()
    assert "s3cr3t-pass" not in str(info.value)


def test_ensure_schema_migrates_sqlite_on_first_use(sqlite_url):
    engine = store.ensure_schema(sqlite_url)
    try:
        assert store.current_revision(engine) == store.head_revision()
    finally:
        engine.dispose()


def test_ensure_schema_only_checks_postgresql(pg_url):
    with pytest.raises(store.SchemaError, match="imgmod db upgrade"):
        store.ensure_schema(pg_url)
    assert table_names(pg_url) == set()
    store.upgrade(pg_url)
    store.ensure_schema(pg_url).dispose()


def test_processes_upgrading_at_once_do_not_collide(database_url):
    start = threading.Barrier(3)
    errors: list[BaseException] = []

    def migrate() -> None:
        start.wait()
        try:
            store.upgrade(database_url)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert table_names(database_url) >= TABLES


def test_postgresql_urls_without_a_driver_use_psycopg2(pg_url):
    assert pg_url.startswith("postgresql://")
    engine = store.make_engine(pg_url)
    try:
        assert engine.dialect.driver == "psycopg2"
    finally:
        engine.dispose()


def test_sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout(sqlite_url):
    engine = store.make_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    finally:
        engine.dispose()


def _insert_old_job(conn: sa.Connection, service: str, lines: int) -> None:
    """Job 1, ``old``, as an earlier schema holds it (written in SQL: no code of today's)."""
    conn.execute(
        sa.text(
            "INSERT INTO jobs (id, name, service, info_type, created_at, total_lines, "
            "accepted, duplicates, rejected) VALUES (1, 'old', :service, '', CURRENT_TIMESTAMP, "
            ":lines, :lines, 0, 0)"
        ),
        {"service": service, "lines": lines},
    )


def test_0009_gives_existing_rows_their_jobs_service_and_keeps_them_unique_per_service(
    database_url,
):
    """An archive moderated before several services per job: its rows take their job's
    service, then a second service's row of the same reference fits beside them."""
    store.upgrade(database_url, "0008")
    engine = store.make_engine(database_url)
    try:
        with engine.begin() as conn:
            _insert_old_job(conn, "aigcDetector_global", lines=1)
            conn.execute(
                sa.text(
                    "INSERT INTO items (job_id, kind, ref_key, source, line, state, attempts, "
                    "created_at, updated_at) VALUES (1, 'url', 'https://e.com/1.png', 'in.txt', "
                    "1, 'done', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
            conn.execute(  # rows referencing the rebuilt tables (SQLite's batch mode)
                sa.text(
                    "INSERT INTO results (item_id, job_id, service, code, raw, moderated_at) "
                    "VALUES (1, 1, 'aigcDetector_global', '200', '{}', CURRENT_TIMESTAMP)"
                )
            )
        store.upgrade(database_url)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT service FROM items")).scalars().all() == [
                "aigcDetector_global"
            ]
        job = store.get_job(engine, "old")
        assert job is not None and job.services == ("aigcDetector_global",)
        again = store.NewItem(
            kind="url", ref_key="https://e.com/1.png", image_url="https://e.com/1.png",
            oss_bucket=None, oss_object=None, oss_region=None, data_id=None, referer=None,
            source="in.txt", line=1, state="pending",
        )  # fmt: skip
        assert store.insert_items(engine, 1, [again]) == []  # same reference, same service
        assert len(store.insert_items(engine, 1, [replace(again, service="other")])) == 1
        store.check_schema(engine)
    finally:
        engine.dispose()


def test_0010_cuts_url_and_oss_identities_to_what_imgmod_computes_now_and_back(database_url):
    """Answers stored before 0010 are still found: a stored identity, cut, equals the one this
    imgmod computes for the same image; a downgrade restores 0009's whole digests."""
    from worker.identity import oss_keys, url_keys

    url, etag, sha = "https://e.com/1.png", '"5EB63BBBE01EEED093CB22BB8F5ACDC3"', "a" * 64
    whole_url = "url:" + hashlib.sha256(url.encode()).hexdigest()
    whole_oss = "oss:" + hashlib.sha256(f"b\0k.png\0{etag.strip(chr(34))}".encode()).hexdigest()
    rows = [  # (kind, ref_key, image_url, bucket, object, etag, identity as 0009 stored it)
        ("url", url, url, None, None, None, whole_url),
        ("oss", "oss://b/k.png", None, "b", "k.png", etag, whole_oss),
        ("oss", "oss://b/gone.png", None, "b", "gone.png", None, "oss:" + "c" * 64),
        ("file", "/tmp/f.png", None, None, None, None, "sha256:" + sha),
    ]
    store.upgrade(database_url, "0009")
    engine = store.make_engine(database_url)
    try:
        with engine.begin() as conn:
            _insert_old_job(conn, "baselineCheck_global", lines=4)
            for line, (kind, ref, image_url, bucket, obj, tag, identity) in enumerate(rows, 1):
                conn.execute(
                    sa.text(
                        "INSERT INTO items (job_id, kind, ref_key, image_url, oss_bucket, "
                        "oss_object, etag, identity, source, line, state, attempts, created_at, "
                        "updated_at, service) VALUES (1, :kind, :ref, :url, :bucket, :obj, :etag, "
                        ":identity, 'in.txt', :line, 'done', 1, CURRENT_TIMESTAMP, "
                        "CURRENT_TIMESTAMP, 'baselineCheck_global')"
                    ),
                    {"kind": kind, "ref": ref, "url": image_url, "bucket": bucket, "obj": obj,
                     "etag": tag, "identity": identity, "line": line},
                )  # fmt: skip

        def identities() -> list[str | None]:
            with engine.connect() as conn:
                query = sa.text("SELECT identity FROM items ORDER BY line")
                return list(conn.execute(query).scalars())

        store.upgrade(database_url)
        assert identities() == [
            url_keys(url).identity,
            oss_keys("b", "k.png", etag, None).identity,
            "oss:" + "c" * 24,
            "sha256:" + sha,
        ]
        with engine.begin() as conn:
            command.downgrade(migrate.alembic_config(conn), "0009")
        # The object without its ETag cannot be computed again: no identity, never reused.
        assert identities() == [whole_url, whole_oss, None, "sha256:" + sha]
        store.upgrade(database_url)
        store.check_schema(engine)
    finally:
        engine.dispose()
