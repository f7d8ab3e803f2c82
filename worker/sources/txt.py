"""``.txt``: one reference per line.

An ``http(s)://`` URL, or ``oss://bucket/object`` (needs ``oss_region``). Surrounding whitespace
is stripped; blank lines and ``#`` comments are skipped.
"""

from __future__ import annotations

from worker.sources.lines import LineParser
from worker.sources.records import RAW_LIMIT, Defaults, Record, Rejected, validate


def txt_line(source: str, number: int, text: str, defaults: Defaults) -> Record | None:
    line = text.strip()
    if not line or line.startswith("#"):
        return None
    if line[:6].lower() != "oss://":
        return validate(source, number, text, {"image_url": line}, defaults)
    bucket, sep, key = line[6:].partition("/")
    if not bucket or not sep or not key:
        return Rejected(
            source,
            number,
            "ossObjectName",
            "an OSS line is oss://bucket/object, with both parts",
            text[:RAW_LIMIT],
        )
    if not defaults.oss_region:
        return Rejected(
            source,
            number,
            "ossRegionId",
            "oss://bucket/object lines need the bucket's region; pass --oss-region",
            text[:RAW_LIMIT],
        )
    return validate(source, number, text, {"oss_bucket": bucket, "oss_object": key}, defaults)


def txt_parser(defaults: Defaults) -> LineParser:
    def parse(source: str, number: int, text: str) -> Record | None:
        return txt_line(source, number, text, defaults)

    return parse
