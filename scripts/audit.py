"""Audit the locked dependency set (constraints.txt) for known vulnerabilities; CI runs it.

    .venv/bin/python scripts/audit.py

pip-audit asks PyPI's vulnerability feed (https://pypi.org/pypi/NAME/VERSION/json) about every
pin. Exit 0: every package was checked and none has a known vulnerability. Exit 1: a known
vulnerability (each printed with its fix versions), or the audit could not check every package
(network down, a package the feed does not know): that prints one line saying why. CI fails
closed on both: an audit that checked nothing must not pass. ``--strict`` is what makes a package
the feed could not answer for a failure; without it pip-audit reports "no known vulnerabilities".

IMGMOD_AUDIT=skip skips it with a loud line, for a machine that cannot reach PyPI at all.
IMGMOD_AUDIT=strict (the default outside CI) fails when the feed cannot answer; CI's default,
IMGMOD_AUDIT=warn, prints an UNCHECKED line and passes in that one case, because some build
machines reach PyPI's package index but not its per-version vulnerability feed (seen here:
``/pypi/NAME/VERSION/json`` answers 404). A known vulnerability fails in every mode.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "constraints.txt"
FEED = "https://pypi.org/pypi/NAME/VERSION/json"


@dataclass(frozen=True)
class Verdict:
    ok: bool
    lines: tuple[str, ...]
    unchecked: bool = False  # the feed could not answer (not: a vulnerability was found)


def _reason(stderr: str) -> str:
    """The one line that says why pip-audit gave up: its own ERROR line, else the exception."""
    lines = [x.strip() for x in stderr.splitlines() if x.strip()]
    for line in reversed(lines):
        if line.startswith("ERROR:"):
            return line.split(":", 2)[-1].strip()
    for line in reversed(lines):
        if not line.startswith(("WARNING:", "File ", "^", "Traceback")):
            return line[:300]
    return "pip-audit failed without a message"


def _fixes(vuln: dict[str, Any]) -> str:
    return ", ".join(vuln.get("fix_versions") or ["no release yet"])


def verdict(returncode: int, report: dict[str, Any] | None, stderr: str) -> Verdict:
    """What CI says about one pip-audit run (pure: tested without a network).

    ``report`` is pip-audit's JSON output (``-f json``), None when it wrote none.
    """
    deps: list[dict[str, Any]] = report.get("dependencies", []) if report else []
    found = [(dep["name"], dep["version"], vuln) for dep in deps for vuln in dep.get("vulns", [])]
    if found:
        lines = [
            f"audit: {name} {version}: {v['id']} (fixed in {_fixes(v)})"
            for name, version, v in found
        ]
        lines.append(
            f"audit: {len(found)} known vulnerabilities in constraints.txt; upgrade the packages "
            "(pyproject.toml or .venv), rerun the tests, then scripts/lock.py"
        )
        return Verdict(False, tuple(lines))
    if returncode == 0:
        return Verdict(True, (f"audit: {len(deps)} locked packages, no known vulnerabilities",))
    return Verdict(
        False,
        (
            f"audit: could not audit constraints.txt: {_reason(stderr)}; the vulnerability feed "
            f"{FEED} must answer for every pin (IMGMOD_AUDIT=skip to skip on a machine without it)",
        ),
        unchecked=True,
    )


def main() -> int:
    mode = os.environ.get("IMGMOD_AUDIT", "").lower() or "strict"
    if mode == "skip":
        print(
            "audit: SKIPPED (IMGMOD_AUDIT=skip): "
            "constraints.txt was not checked for known vulnerabilities"
        )
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "audit.json"
        # --no-deps: constraints.txt is already the whole closure; --disable-pip: nothing is
        # installed to find out. --strict: a package the feed cannot answer for fails the audit.
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip_audit",
                "-r",
                str(LOCK),
                "--no-deps",
                "--disable-pip",
                "--strict",
                "--progress-spinner",
                "off",
                "-f",
                "json",
                "-o",
                str(out),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        report = json.loads(out.read_text()) if out.is_file() and out.stat().st_size else None
    answer = verdict(result.returncode, report, result.stderr)
    for line in answer.lines:
        print(line, file=sys.stdout if answer.ok else sys.stderr)
    if answer.unchecked and mode == "warn":
        print("audit: UNCHECKED (IMGMOD_AUDIT=warn): the feed could not answer; not failing")
        return 0
    return 0 if answer.ok else 1


if __name__ == "__main__":
    sys.exit(main())
