"""How a parent reads the address a child server prints: the child's stdout is the parent's
temporary file, and a dup'd descriptor shares one file offset with it (what Popen's dup2 does).

CI once waited 60 s for an emulator that had started: the parent's ``seek(0)`` landed between
the child's two prints, the second print went to offset 0, and the "listening on" line was gone.
"""

from __future__ import annotations

import os
import tempfile
from typing import IO

from worker.processes import _announced_url

API = b"emulator listening on http://127.0.0.1:40001\n"
OSS = b"emulator oss listening on http://127.0.0.1:40002\n"


class _Alive:
    returncode = None

    def poll(self) -> None:
        return None


class _ChildPrintsWhileParentReads:
    """The parent's file object; the child's next print lands the moment the parent touches it
    to read, which is the interleaving that lost the line."""

    def __init__(self, log: IO[bytes], child_fd: int, pending: bytes) -> None:
        self._log = log
        self._child_fd = child_fd
        self._pending = pending

    def _child_prints(self) -> None:
        if self._pending:
            os.write(self._child_fd, self._pending)
            self._pending = b""

    def fileno(self) -> int:
        self._child_prints()
        return self._log.fileno()

    def read(self, *args: int) -> bytes:
        self._child_prints()
        return self._log.read(*args)

    def seek(self, *args: int) -> int:
        return self._log.seek(*args)


def test_the_first_line_survives_a_print_that_lands_while_the_parent_reads() -> None:
    with tempfile.TemporaryFile() as log:
        child_fd = os.dup(log.fileno())
        try:
            os.write(child_fd, API)
            racing = _ChildPrintsWhileParentReads(log, child_fd, OSS)

            url = _announced_url(racing, _Alive(), "emulator listening on")  # type: ignore[arg-type]

            assert url == "http://127.0.0.1:40001"
            assert os.pread(log.fileno(), 1000, 0) == API + OSS
            assert _announced_url(log, _Alive(), "emulator oss listening on") == (  # type: ignore[arg-type]
                "http://127.0.0.1:40002"
            )
        finally:
            os.close(child_fd)


def test_nothing_printed_yet_reads_as_no_address() -> None:
    with tempfile.TemporaryFile() as log:
        assert _announced_url(log, _Alive(), "emulator listening on") == ""  # type: ignore[arg-type]
