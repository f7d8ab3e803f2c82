"""Packaging decisions that need no build: where the migrations are found, what the wheel lists,
and how CI reads a pip-audit run. The wheel itself is built and installed by
tests/integration/test_wheel_install.py; the audit runs for real in .ci/run.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import tomllib

from worker import store

ROOT = Path(__file__).parents[2]


def _script(name: str) -> ModuleType:
    qualified = f"imgmod_scripts_{name}"
    spec = importlib.util.spec_from_file_location(qualified, ROOT / "scripts" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _migrations(at: Path) -> Path:
    (at / "versions").mkdir(parents=True)
    (at / "env.py").write_text("")
    return at


def test_an_installed_wheel_uses_the_migrations_inside_the_package(tmp_path):
    package = tmp_path / "site-packages" / "worker"
    inside = _migrations(package / "_migrations")
    assert store.find_migrations(package) == inside


def test_a_source_checkout_uses_the_top_level_migrations(tmp_path):
    package = tmp_path / "repo" / "worker"
    package.mkdir(parents=True)
    beside = _migrations(tmp_path / "repo" / "migrations")
    assert store.find_migrations(package) == beside


def test_without_migrations_the_error_names_the_wheel_location(tmp_path):
    package = tmp_path / "worker"
    package.mkdir()
    assert store.find_migrations(package) == package / "_migrations"


def test_this_checkout_finds_the_repository_migrations():
    assert store.MIGRATIONS_DIR == ROOT / "migrations"


def test_the_wheel_lists_every_subpackage_of_worker_and_maps_the_migrations():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(tool["packages"])
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "worker").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert on_disk <= listed, f"add {sorted(on_disk - listed)} to [tool.setuptools] packages"
    assert tool["package-dir"]["worker._migrations"] == "migrations"
    for sub in (ROOT / "migrations").rglob("*"):
        if sub.is_dir() and sub.name != "__pycache__":
            name = ".".join(("worker._migrations", *sub.relative_to(ROOT / "migrations").parts))
            assert name in listed, f"add {name} to [tool.setuptools] packages"
    non_python = {
        p.relative_to(ROOT / "migrations").as_posix()
        for p in (ROOT / "migrations").rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc")
    }
    assert non_python <= set(tool["package-data"]["worker._migrations"])


@pytest.fixture(scope="module")
def audit() -> ModuleType:
    return _script("audit")


REPORT_CLEAN = {"dependencies": [{"name": "requests", "version": "2.34.2", "vulns": []}]}
REPORT_VULNERABLE = {
    "dependencies": [
        {"name": "idna", "version": "3.20", "vulns": []},
        {
            "name": "requests",
            "version": "2.19.0",
            "vulns": [
                {
                    "id": "PYSEC-2018-28",
                    "fix_versions": ["2.20.0"],
                    "aliases": [],
                    "description": "x",
                },
                {
                    "id": "GHSA-j8r2-6x86-q33q",
                    "fix_versions": [],
                    "aliases": [],
                    "description": "y",
                },
            ],
        },
    ]
}


def test_a_clean_audit_passes(audit):
    answer = audit.verdict(0, REPORT_CLEAN, "")
    assert answer.ok and answer.lines == ("audit: 1 locked packages, no known vulnerabilities",)


def test_a_known_vulnerability_fails_and_names_package_id_and_fix(audit):
    answer = audit.verdict(1, REPORT_VULNERABLE, "Found 2 known vulnerabilities in 1 package")
    assert not answer.ok
    assert "audit: requests 2.19.0: PYSEC-2018-28 (fixed in 2.20.0)" in answer.lines
    assert "audit: requests 2.19.0: GHSA-j8r2-6x86-q33q (fixed in no release yet)" in answer.lines
    assert "2 known vulnerabilities" in answer.lines[-1]


def test_a_package_the_feed_cannot_answer_for_fails_in_one_line(audit):
    stderr = (
        "WARNING:pip_audit._cli:--no-deps is supported, but users are encouraged to ...\n"
        "ERROR:pip_audit._cli:aiofiles: Dependency not found on PyPI and could not be audited: "
        "aiofiles (24.1.0)\n"
    )
    answer = audit.verdict(1, None, stderr)
    assert not answer.ok and len(answer.lines) == 1
    assert (
        "could not audit constraints.txt: aiofiles: Dependency not found on PyPI" in answer.lines[0]
    )


def test_a_network_failure_fails_in_one_line_without_the_traceback(audit):
    stderr = (
        "Traceback (most recent call last):\n"
        '  File "/x/requests/adapters.py", line 696, in send\n'
        "    resp = conn.urlopen(\n"
        "requests.exceptions.ProxyError: HTTPSConnectionPool(host='pypi.org', port=443): "
        "Max retries exceeded\n"
    )
    answer = audit.verdict(1, None, stderr)
    assert not answer.ok and len(answer.lines) == 1
    assert "ProxyError" in answer.lines[0] and "Traceback" not in answer.lines[0]


def test_the_lock_is_what_the_venv_holds():
    """constraints.txt is the closure of imgmod[dev] at the versions installed here."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "lock.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
