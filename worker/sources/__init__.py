"""Input readers: inputs of image references -> validated :class:`Accepted` / :class:`Rejected`.

One module per kind of input (:mod:`~worker.sources.kinds` lists them: standard input, a local
file) and per file format (:mod:`~worker.sources.txt`, :mod:`~worker.sources.csv_file`,
:mod:`~worker.sources.jsonl`, each documenting its rules); :mod:`~worker.sources.lines` reads
physical lines in bounded memory and :mod:`~worker.sources.records` holds what they all yield
and the validation they share. Nothing here touches the database.

Every reader streams, one physical line at a time, each capped at :data:`MAX_LINE_BYTES`. A bad
line (invalid UTF-8, a NUL byte, bad quoting, a wrong type, an invalid parameter) becomes a
:class:`Rejected` naming its 1-based physical line; the rest of the input goes on.

``oss_region`` and ``referer`` are defaults for rows that do not carry their own (the region
only for OSS rows). An input that cannot be read at all (missing, a directory, unreadable, an
unknown extension) raises an :class:`InputError` when :func:`read_inputs` is called, before any
line is read, so a caller can refuse the whole command before it writes anything.

A :class:`Rejected` carries an ``identity`` besides its display ``source``: the resolved absolute
path of its file (or a token of this read, for standard input), its line and a digest of the
line. Two ``urls.txt`` from different folders, or two runs of ``-``, are different inputs and
keep their own rejected rows; reading the same unchanged file again gives the same identities.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import IO

from worker.sources.folder import check_folder
from worker.sources.kinds import kind_of
from worker.sources.lines import MAX_LINE_BYTES
from worker.sources.oss_prefix import Filters
from worker.sources.records import (
    RAW_LIMIT,
    Accepted,
    Defaults,
    InputError,
    InputIsADirectory,
    InputNotFound,
    InputUnreadable,
    Record,
    Rejected,
    UnknownInputFormat,
)

__all__ = [
    "MAX_LINE_BYTES",
    "RAW_LIMIT",
    "Accepted",
    "InputError",
    "InputIsADirectory",
    "InputNotFound",
    "InputUnreadable",
    "Record",
    "Rejected",
    "UnknownInputFormat",
    "check_input",
    "read_inputs",
]


def read_inputs(
    paths: Sequence[str],
    *,
    oss_region: str | None = None,
    referer: str | None = None,
    stdin: IO[bytes] | None = None,
) -> Iterator[Record]:
    """Stream every reference of ``paths`` in order.

    Checks every path up front and raises an :class:`InputError` for the first one that cannot
    be read at all (see :func:`check_input`), before any line is read.
    """
    for path in paths:
        check_input(path)
    return _read_all(list(paths), Defaults(oss_region, referer), stdin)


def check_input(path: str, folder_filters: Filters | None = None) -> None:
    """Raise the :class:`InputError` for ``path`` if it can't be read as an input: missing,
    a directory, unreadable (it is opened to find out), or of an unknown format. A folder is
    checked under ``folder_filters`` when given (``--include '*.dat'`` makes a folder of
    ``.dat`` files an input; without it such a folder holds no image)."""
    kind = kind_of(path)
    if folder_filters is not None and kind.name == "folder":
        check_folder(path, folder_filters)
        return
    kind.check(path)


def _read_all(paths: list[str], defaults: Defaults, stdin: IO[bytes] | None) -> Iterator[Record]:
    for path in paths:
        yield from kind_of(path).read(path, defaults, stdin)
