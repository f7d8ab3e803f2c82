"""Pinned answers for chosen images, loaded from ``--rules FILE``.

The file is JSON, either a list of rules or ``{"rules": [...]}``. Each rule names exactly one
matcher and at least one outcome::

    {"sha256": "<hex of the image bytes>", "code": 405}
    {"url": "http://127.0.0.1:8081/img/7.png", "data": {"Result": [...], "RiskLevel": "high"}}
    {"url_contains": "/flaky/", "code": 500, "msg": "injected"}

``code`` other than 200 answers that code (never billed); ``data`` (with code 200 or no code)
answers that ``Data`` object, with ``DataId`` set from the request when the object lacks one.
URL rules apply before the download (the URL need not exist); sha256 rules right after it,
before the format and size checks. The first matching rule wins.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_MATCHERS = ("sha256", "url", "url_contains")


@dataclass(frozen=True)
class Rule:
    matcher: str  # one of "sha256", "url", "url_contains"
    pattern: str
    code: int = 200
    data: dict[str, Any] | None = field(default=None, hash=False)
    msg: str | None = None


def parse_rules(document: Any) -> tuple[Rule, ...]:
    """Validate a decoded rules document; ValueError names the rule index and the problem."""
    items = document.get("rules") if isinstance(document, dict) else document
    if not isinstance(items, list):
        raise ValueError('rules must be a JSON list or an object {"rules": [...]}')
    rules: list[Rule] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"rule {index} must be an object")
        given = [name for name in _MATCHERS if name in item]
        if len(given) != 1:
            raise ValueError(f"rule {index} needs exactly one of {', '.join(_MATCHERS)}")
        matcher = given[0]
        pattern = item[matcher]
        code = item.get("code", 200)
        data = item.get("data")
        msg = item.get("msg")
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"rule {index}: {matcher} must be a non-empty string")
        if not isinstance(code, int) or isinstance(code, bool):
            raise ValueError(f"rule {index}: code must be an integer")
        if data is not None and not isinstance(data, dict):
            raise ValueError(f"rule {index}: data must be a JSON object (the Data of an answer)")
        if code == 200 and data is None:
            raise ValueError(f"rule {index}: give data, or a code other than 200")
        if msg is not None and not isinstance(msg, str):
            raise ValueError(f"rule {index}: msg must be a string")
        if matcher == "sha256":
            pattern = pattern.lower()
        rules.append(Rule(matcher, pattern, code, data, msg))
    return tuple(rules)


def load_rules(path: Path) -> tuple[Rule, ...]:
    with path.open(encoding="utf-8") as handle:
        return parse_rules(json.load(handle))


def rule_for_url(rules: tuple[Rule, ...], url: str) -> Rule | None:
    for rule in rules:
        if (rule.matcher == "url" and rule.pattern == url) or (
            rule.matcher == "url_contains" and rule.pattern in url
        ):
            return rule
    return None


def rule_for_sha256(rules: tuple[Rule, ...], sha256_hex: str) -> Rule | None:
    for rule in rules:
        if rule.matcher == "sha256" and rule.pattern == sha256_hex:
            return rule
    return None


def pinned_data(rule: Rule, data_id: str | None) -> dict[str, Any]:
    """The rule's Data object, with the request's DataId when the object does not set one."""
    data = json.loads(json.dumps(rule.data or {}))
    data.setdefault("DataId", data_id or "")
    return dict(data)
