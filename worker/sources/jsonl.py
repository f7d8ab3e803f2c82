"""``.jsonl`` / ``.ndjson``: one JSON object per line.

The keys are the CSV column names (:data:`~worker.sources.records.FIELDS`); values are strings
or null. A line that is not an object, has an unknown key, a key given twice or a non-string
value is rejected. Blank lines are skipped.

Every check is linear in the line's length: a line of the 1 MiB cap that repeats one key tens
of thousands of times costs what any 1 MiB line costs (``bench/sources.py``).
"""

from __future__ import annotations

import json
from collections import Counter

from worker.sources.lines import LineParser
from worker.sources.records import (
    API_NAMES,
    FIELDS,
    KNOWN_KEYS,
    RAW_LIMIT,
    Defaults,
    Record,
    Rejected,
    validate,
)

_NAMED_AT_MOST = 5  # unknown keys named in a rejection; a garbage line may hold thousands


class _JsonObject(dict[str, object]):
    """A decoded JSON object that remembers the keys it was given more than once."""

    repeated: tuple[str, ...] = ()


def _json_object(pairs: list[tuple[str, object]]) -> _JsonObject:
    # json.loads would silently keep the last of two equal keys: which URL did the user mean?
    # One counting pass: a line repeating a key 60,000 times must not cost 60,000² steps.
    obj = _JsonObject(pairs)
    if len(obj) != len(pairs):
        counts = Counter(key for key, _ in pairs)
        obj.repeated = tuple(key for key in obj if counts[key] > 1)
    return obj


def json_line(source: str, number: int, text: str, defaults: Defaults) -> Record | None:
    if not text.strip():
        return None
    try:
        obj = json.loads(text, object_pairs_hook=_json_object)
    except (ValueError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        return Rejected(source, number, "json", f"not valid JSON: {reason}", text[:RAW_LIMIT])
    if not isinstance(obj, dict):
        return Rejected(
            source,
            number,
            "json",
            f"a line must be a JSON object, not {_json_kind(obj)}",
            text[:RAW_LIMIT],
        )
    if isinstance(obj, _JsonObject) and obj.repeated:
        return Rejected(
            source, number, "json", f"gives the key {obj.repeated[0]!r} twice", text[:RAW_LIMIT]
        )
    values: dict[str, str] = {}
    unknown: list[str] = []
    for key, value in obj.items():
        name = FIELDS.get(key.strip().lower())
        if name is None:
            unknown.append(key)
            continue
        if name in values:
            return Rejected(
                source, number, "json", f"gives {API_NAMES[name]} twice", text[:RAW_LIMIT]
            )
        if value is None:
            continue
        if not isinstance(value, str):
            kind = "a boolean" if isinstance(value, bool) else f"a JSON {_json_kind(value)}"
            return Rejected(
                source,
                number,
                API_NAMES[name],
                f"must be a string, not {kind}",
                text[:RAW_LIMIT],
            )
        values[name] = value
    if unknown:
        names = ", ".join(repr(k) for k in unknown[:_NAMED_AT_MOST])
        if len(unknown) > _NAMED_AT_MOST:
            names += f" and {len(unknown) - _NAMED_AT_MOST} more"
        return Rejected(
            source,
            number,
            "json",
            f"unknown key(s) {names}; use {KNOWN_KEYS}",
            text[:RAW_LIMIT],
        )
    return validate(source, number, text, values, defaults)


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    return "dict" if isinstance(value, dict) else type(value).__name__


def jsonl_parser(defaults: Defaults) -> LineParser:
    def parse(source: str, number: int, text: str) -> Record | None:
        return json_line(source, number, text, defaults)

    return parse
