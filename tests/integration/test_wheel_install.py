"""imgmod as users install it: a wheel in a fresh virtualenv, not the editable checkout.

An editable install finds the migrations beside the package, in the repository; a wheel has only
what pyproject.toml maps into it. These tests build the wheel from a copy of the source files,
install it into a new venv and run its own `imgmod` script, from a directory outside the
repository, against a new SQLite file and a new PostgreSQL database.

The wheel goes in with ``--no-deps`` and the new venv borrows the test venv's third-party
packages through a ``.pth`` line (whose own ``.pth`` files, the editable hook among them, are
not run), so no index is needed; the test checks that ``worker`` itself is the wheel's copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from worker import store

pytestmark = [pytest.mark.service, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
SOURCES = ("pyproject.toml", "README.md", "worker", "migrations")
TABLES = {"jobs", "items", "results", "result_labels", "alembic_version"}


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    workdir: Path  # outside the repository: nothing of the checkout is importable from here

    @property
    def imgmod(self) -> Path:
        return self.venv / "bin" / "imgmod"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def run(
        self, *argv: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        clean = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("IMGMOD_", "ALIBABA_CLOUD_")) and k != "PYTHONPATH"
        }
        return subprocess.run(
            [*argv],
            cwd=self.workdir,
            env={**clean, **(env or {})},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )


def _check(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args}: {result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            shutil.copy2(ROOT / name, src / name)
    dist = base / "dist"
    # Built from the copy, so no build/ or *.egg-info lands in the working tree.
    _check(
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--no-deps",
                "-w",
                str(dist),
                f"{src}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    )
    (wheel,) = dist.glob("imgmod-*.whl")
    venv = base / "venv"
    _check(
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", str(venv)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    )
    _check(
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "--python",
                str(venv / "bin" / "python"),
                "install",
                "--quiet",
                "--no-deps",
                str(wheel),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    )
    purelib = _check(
        subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    ).strip()
    (Path(purelib) / "zz_imgmod_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    workdir = base / "work"
    workdir.mkdir()
    return Installed(wheel=wheel, venv=venv, workdir=workdir)


def _tables_and_revision(url: str) -> tuple[set[str], str | None]:
    engine = store.make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names()), store.current_revision(engine)
    finally:
        engine.dispose()


def test_the_wheel_carries_every_migration(installed):
    with zipfile.ZipFile(installed.wheel) as wheel:
        shipped = {n for n in wheel.namelist() if n.startswith("worker/_migrations/")}
    expected = {
        "worker/_migrations/" + p.relative_to(ROOT / "migrations").as_posix()
        for p in (ROOT / "migrations").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert expected and shipped == expected


def test_the_installed_package_uses_its_own_migrations(installed):
    out = _check(
        installed.run(
            str(installed.python),
            "-c",
            "import worker, worker.store as s; print(worker.__file__); print(s.MIGRATIONS_DIR)",
        )
    )
    module, migrations = (Path(x) for x in out.split())
    assert installed.venv in module.parents, "worker was imported from somewhere else"
    assert migrations == module.parent / "_migrations"
    assert ROOT not in migrations.parents


def test_db_upgrade_from_the_wheel_creates_the_schema_on_sqlite(installed, tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    _check(installed.run(str(installed.imgmod), "db", "upgrade", env={"IMGMOD_DATABASE_URL": url}))
    tables, revision = _tables_and_revision(url)
    assert tables >= TABLES
    assert revision == store.head_revision()


def test_db_upgrade_from_the_wheel_creates_the_schema_on_postgresql(installed, pg_url):
    assert _tables_and_revision(pg_url)[0] == set()
    env = {"IMGMOD_DATABASE_URL": pg_url}
    _check(installed.run(str(installed.imgmod), "db", "upgrade", env=env))
    tables, revision = _tables_and_revision(pg_url)
    assert tables >= TABLES
    assert revision == store.head_revision()
    _check(
        installed.run(str(installed.imgmod), "db", "upgrade", env=env)
    )  # a no-op the second time


def test_status_on_the_default_sqlite_works_from_the_wheel(installed):
    """The reported failure: `imgmod status` with no settings at all, in a new directory."""
    result = installed.run(str(installed.imgmod), "status")
    _check(result)
    assert "migrations" not in result.stderr
    tables, revision = _tables_and_revision(f"sqlite:///{installed.workdir / 'imgmod.db'}")
    assert tables >= TABLES and revision == store.head_revision()
