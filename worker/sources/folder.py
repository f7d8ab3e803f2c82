"""The input kind "local images": an image file, or a folder of them read recursively.

A path that is a directory, or an existing file with one of the vendor's image extensions
(:data:`worker.vendor.IMAGE_EXTENSIONS`), is read here; reference files (.txt, .csv, .jsonl)
stay with :mod:`worker.sources.files`. Each image becomes one row keeping its absolute path and
its SHA-256, computed streaming at enqueue: the worker uploads the file at call time
(:mod:`worker.uploads`) and refuses one whose bytes changed since, and the SHA-256 is the
image's identity, so a second run of the same folder bills nothing (:mod:`worker.identity`).

The walk is sorted (the same folder always yields the same rows in the same order) and never
leaves the tree: a symlink to a file is read only when its target lies inside the folder, a
symlink to a directory is not entered (inside the tree it would read files twice, or loop).
Which files are kept is :func:`worker.sources.oss_prefix.decide`, the rule OSS prefixes use,
on the path relative to the folder: the default extensions, an empty file or one over the
vendor's 20 MB limit recorded ``rejected`` with the reason (no call).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from worker.oss import ObjectInfo
from worker.params import ImageRef
from worker.sources.oss_prefix import KEEP, SKIP, Filters, decide
from worker.sources.records import (
    Accepted,
    Defaults,
    InputIsADirectory,
    InputNotFound,
    InputUnreadable,
    Record,
    Rejected,
)
from worker.vendor import IMAGE_EXTENSIONS

_CHUNK = 1024 * 1024  # bytes read at a time while hashing: memory stays flat for any file
DEFAULT_FILTERS = Filters()  # the vendor's image extensions, no globs


@dataclass(frozen=True)
class RejectedFile(Rejected):
    """A file that cannot be moderated (empty, too large, unreadable). Its identity is its
    path, not its position in the walk: a file added to the folder does not renumber it."""

    @property
    def identity(self) -> str:
        digest = hashlib.sha256(self.origin.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        return f"file:{digest}"


@dataclass(frozen=True)
class LocalImage(Accepted):
    """An accepted local image, with its size at enqueue."""

    size: int


@dataclass(frozen=True)
class FoundFile:
    """One file of the walk: where it is, and its path relative to the folder (for filters)."""

    path: str
    relative: str
    size: int


def is_image_name(name: str) -> bool:
    """Whether ``name`` ends in one of the vendor's image extensions (case-insensitive)."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def claims_folder(path: str) -> bool:
    """A directory, or an existing regular file with an image extension."""
    target = Path(path)
    return target.is_dir() or (target.is_file() and is_image_name(target.name))


def check_folder(path: str, filters: Filters = DEFAULT_FILTERS) -> None:
    """Refuse, before anything is read, a path that is gone or a folder with no image at all
    (a folder of reference files is most likely meant as ``folder/*.txt``). Under
    ``--include``/``--exclude`` (``filters``), "an image" is a file those globs keep: the
    user named the files, whatever their extension."""
    target = Path(path)
    if not target.exists():
        raise InputNotFound(path, "input not found; check the path")
    if target.is_file():
        if not os.access(target, os.R_OK):
            raise InputUnreadable(path, "cannot be read (permission denied); check its mode")
        return
    if not os.access(target, os.R_OK | os.X_OK):
        raise InputUnreadable(path, "folder cannot be read (permission denied); check its mode")
    if next(walk(target, filters), None) is None:
        if filters != DEFAULT_FILTERS:
            globs = " ".join(
                [f"--include {g!r}" for g in filters.include]
                + [f"--exclude {g!r}" for g in filters.exclude]
            )
            raise InputIsADirectory(
                path, f"no file in this folder is kept by {globs}; check the patterns"
            )
        raise InputIsADirectory(
            path,
            "is a directory with no image files (png, jpg, jpeg, bmp, webp, tiff, svg, heif, "
            f"heic, gif, ico); pass a folder of images, or its reference files (e.g. "
            f"{path.rstrip('/')}/*.txt)",
        )


def walk(root: Path, filters: Filters = DEFAULT_FILTERS) -> Iterator[FoundFile]:
    """The files under ``root`` (or ``root`` itself, a file), sorted by name at each level,
    that ``filters`` do not skip. Directory symlinks are not entered; a file symlink only
    when its target is inside ``root``."""
    base = Path(os.path.abspath(root))
    if base.is_file():
        found = _found(base, base.name, base.stat().st_size)
        if decide(_info(found), filters) != SKIP:
            yield found
        return
    inside = os.path.realpath(base)
    yield from _walk_dir(base, "", inside, filters)


def _walk_dir(folder: Path, prefix: str, inside: str, filters: Filters) -> Iterator[FoundFile]:
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError:
        return  # an unreadable subfolder: nothing in it can be read either
    for entry in entries:
        relative = prefix + entry.name
        if entry.is_symlink():
            target = os.path.realpath(entry.path)
            if os.path.commonpath((inside, target)) != inside or not os.path.isfile(target):
                continue  # out of the tree, dangling, or a directory: never followed
        elif entry.is_dir(follow_symlinks=False):
            yield from _walk_dir(Path(entry.path), relative + "/", inside, filters)
            continue
        elif not entry.is_file(follow_symlinks=False):
            continue  # sockets, fifos, devices
        try:
            size = entry.stat().st_size
        except OSError:
            continue  # vanished during the walk
        found = _found(Path(entry.path), relative, size)
        if decide(_info(found), filters) != SKIP:
            yield found


def _found(path: Path, relative: str, size: int) -> FoundFile:
    return FoundFile(str(path), relative, size)


def _info(found: FoundFile) -> ObjectInfo:
    return ObjectInfo(key=found.relative, size=found.size, etag="", last_modified=None)


def file_sha256(path: str) -> str:
    """The SHA-256 of the file at ``path``, read in chunks (hex, lower case)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def folder_records(
    path: str, defaults: Defaults, filters: Filters = DEFAULT_FILTERS
) -> Iterator[Record]:
    """One record per image under ``path``: accepted with its path and SHA-256, or rejected
    (empty, too large, unreadable) naming the file."""
    source = path
    for number, found in enumerate(walk(Path(path), filters), start=1):
        verdict = decide(_info(found), filters)
        if verdict == KEEP:
            try:
                sha256 = file_sha256(found.path)
            except OSError as exc:
                verdict = f"cannot be read ({exc.strerror or type(exc).__name__})"
            else:
                ref = ImageRef(local_path=found.path, sha256=sha256, referer=defaults.referer)
                yield LocalImage(ref, source, number, found.size)
                continue
        reason = verdict.replace("the object is", "the file is")
        yield RejectedFile(source, number, "localFile", reason, found.path, found.path)


def read_folder(path: str, defaults: Defaults, stdin: IO[bytes] | None) -> Iterator[Record]:
    """:func:`folder_records` with the default filters (the kind's reader)."""
    return folder_records(path, defaults)


__all__ = [
    "LocalImage",
    "RejectedFile",
    "check_folder",
    "claims_folder",
    "file_sha256",
    "folder_records",
    "read_folder",
    "walk",
]
