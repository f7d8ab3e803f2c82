"""Which kind of input a path names: the one place a new kind of source is added.

A kind claims the paths it reads, refuses a path it cannot read before anything is read
(``check`` raises an :class:`~worker.sources.records.InputError`), and streams its records.
Kinds are asked in order and the first that claims a path reads it; the local file comes last
and takes the rest. OSS prefixes (``oss://bucket/prefix/``) and local folders come next: each
is a module with its three functions and one entry in :data:`KINDS`, ahead of the file (a
folder kind then claims what the file kind today refuses as a directory).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from worker.sources import files, folder, oss_prefix, stdin
from worker.sources.records import Defaults, Record


@dataclass(frozen=True)
class SourceKind:
    name: str
    claims: Callable[[str], bool]
    check: Callable[[str], None]
    read: Callable[[str, Defaults, IO[bytes] | None], Iterator[Record]]
    # Listed page by page by the producer, which saves the continuation point with the job
    # (an OSS prefix); ``read`` is then not used.
    paged: bool = False


KINDS: tuple[SourceKind, ...] = (
    SourceKind("stdin", stdin.claims_stdin, stdin.check_stdin, stdin.read_stdin),
    SourceKind(
        "oss-prefix",
        oss_prefix.claims_prefix,
        oss_prefix.check_prefix,
        oss_prefix.read_prefix,
        paged=True,
    ),
    # Folders and image files; reference files (.txt, .csv, .jsonl) fall through to "file".
    SourceKind("folder", folder.claims_folder, folder.check_folder, folder.read_folder),
    SourceKind("file", files.claims_file, files.check_file, files.read_file),
)


def kind_of(path: str) -> SourceKind:
    """The first kind in :data:`KINDS` that claims ``path``."""
    return next(kind for kind in KINDS if kind.claims(path))
