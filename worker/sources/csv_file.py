"""``.csv``: comma-separated, UTF-8, with a header row on line 1 naming the columns.

Columns: ``url`` (or ``image_url`` / ``imageUrl``), ``oss_bucket`` / ``ossBucketName``,
``oss_object`` / ``ossObjectName``, ``oss_region`` / ``ossRegionId``, ``data_id`` / ``dataId``,
``referer`` (case-insensitive). Unknown columns are ignored, and named once in a logged warning,
so an export with extra columns (size, owner...) can be fed as is. A header without any image
column, or naming one field twice, makes the file unusable: line 1 is rejected with the reason
and the file's other lines are skipped. A row with too few or too many cells, or bad quoting, is
rejected. A quoted cell may not span lines (a newline is never valid in any of these fields), so
line numbers are always physical lines.

(Named ``csv_file`` so that it never shadows the standard library's ``csv`` it reads with.)
"""

from __future__ import annotations

import csv
import logging
from collections import Counter

from worker.sources.lines import Stop
from worker.sources.records import (
    API_NAMES,
    FIELDS,
    RAW_LIMIT,
    Defaults,
    Record,
    Rejected,
    validate,
)

log = logging.getLogger(__name__)


class CsvParser:
    """Line 1 is the header; each later line is one record (see the module docstring).

    A :data:`~worker.sources.lines.LineParser` with state: one instance per file."""

    def __init__(self, defaults: Defaults) -> None:
        self.defaults = defaults
        self.columns: list[str | None] | None = None  # field per column; None: ignored

    def __call__(self, source: str, number: int, text: str) -> Record | Stop | None:
        if self.columns is None:
            return self._header(source, number, text)
        if not text.strip():
            return None
        cells = self._cells(source, number, text)
        if isinstance(cells, Rejected):
            return cells
        if len(cells) != len(self.columns):
            return Rejected(
                source,
                number,
                "csv",
                f"has {len(cells)} cells but the header has {len(self.columns)} columns",
                text[:RAW_LIMIT],
            )
        values = {
            name: cell for name, cell in zip(self.columns, cells, strict=True) if name and cell
        }
        return validate(source, number, text, values, self.defaults)

    @staticmethod
    def _cells(source: str, number: int, text: str) -> list[str] | Rejected:
        try:
            return next(csv.reader([text], strict=True))
        except csv.Error as exc:
            reason = (
                "a quoted cell is not closed on this line (cells may not span lines)"
                if "unexpected end of data" in str(exc)
                else f"bad quoting: {exc}"
            )
            return Rejected(source, number, "csv", reason, text[:RAW_LIMIT])

    def _header(self, source: str, number: int, text: str) -> Stop | None:
        def fatal(reason: str) -> Stop:
            return Stop(
                Rejected(
                    source,
                    number,
                    "csv",
                    f"{reason}; the rest of the file was skipped",
                    text[:RAW_LIMIT],
                )
            )

        cells = self._cells(source, number, text)
        if isinstance(cells, Rejected):
            return fatal(f"header: {cells.reason}")
        columns = [FIELDS.get(cell.strip().lower()) for cell in cells]
        counts = Counter(c for c in columns if c)
        twice = sorted(API_NAMES[c] for c, n in counts.items() if n > 1)
        if twice:
            return fatal(f"the header names {', '.join(twice)} more than once")
        if not {"image_url", "oss_bucket", "oss_object"} & set(counts):
            return fatal(
                "line 1 must be a header naming the columns (url, or ossBucketName, "
                f"ossObjectName, ossRegionId; optional dataId, referer), found {cells[:5]!r}; "
                "for a bare list of URLs use a .txt file"
            )
        ignored = [cell for cell, c in zip(cells, columns, strict=True) if c is None]
        if ignored:
            log.warning("%s: ignoring unknown CSV column(s) %s", source, ", ".join(ignored))
        self.columns = columns
        return None
