"""``imgmod`` as a user runs it: ``python -m worker.cli ARGS`` in a subprocess, with settings
added to the test process's environment."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import IO, Any

IMGMOD = (sys.executable, "-m", "worker.cli")


def run_imgmod(
    env: Mapping[str, str],
    *args: str,
    timeout: float = 180,
    check: bool = False,
    stdin: str | None = None,
    prefix: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Run ``imgmod ARGS`` to the end, output captured; ``stdin`` is piped in, ``prefix`` goes
    before the interpreter (``setpriv ...`` to run as another user)."""
    return subprocess.run(
        [*prefix, *IMGMOD, *args],
        env={**os.environ, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


def start_imgmod(
    env: Mapping[str, str],
    *args: str,
    stdout: int | IO[Any] = subprocess.PIPE,
    stderr: int | IO[Any] = subprocess.PIPE,
) -> subprocess.Popen[str]:
    """Start ``imgmod ARGS`` in the background (while the test breaks things); ``communicate()``
    or ``wait()`` to collect it, and kill it in a ``finally``."""
    return subprocess.Popen(
        [*IMGMOD, *args],
        env={**os.environ, **env},
        stdout=stdout,
        stderr=stderr,
        text=True,
    )
