"""Policies: a small TOML file that turns a stored answer into ``block``, ``review`` or ``pass``.

Pure: :func:`parse_policy` reads and validates the text (every mistake refused with the file,
line and field, before anything is written), :func:`evaluate` decides one answer. The vendor's
advice for its RiskLevel (its page, Table 2): "take immediate action on high-risk content and
manually review medium-risk content ... otherwise treat [low] the same as content for which no
risk is detected", which the shipped default policy (``worker/policies/default.toml``) follows.

A policy::

    name = "archive"
    version = "3"
    default = "review"          # when no rule matches (optional; review unless said)

    [[rules]]                   # ordered: the first rule that matches decides
    name = "adult"
    labels = ["pornographic_*", "sexual_intimacy"]   # exact labels or globs
    min_confidence = 80         # that label's confidence, 0-100
    decision = "block"

    [[rules]]
    name = "custom-library"
    custom_image = true         # Ext.CustomImage hit (a custom image library)
    decision = "review"
    priority = 10               # review order, higher first (review rules only)

Every condition a rule gives must hold; a rule with none matches every answer. The Ext facts
are ``custom_image`` (``Ext.CustomImage`` non-empty), ``custom_text`` (``TextInImage.CustomText``,
a custom keyword library hit) and ``risk_words`` (``TextInImage.RiskWord``, risky words in the
image's text); ``true`` asks for the fact, ``false`` for its absence. ``risk_level`` is the
answer's overall RiskLevel (a string or a list of ``high``/``medium``/``low``/``none``).
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from worker.policy_text import PolicyError, load_toml, locate_keys

POLICY_DECISIONS = ("block", "review", "pass")
RISK_LEVELS = ("high", "medium", "low", "none")
EXT_FACTS = ("custom_image", "custom_text", "risk_words")
TOP_KEYS = ("name", "version", "description", "default", "rules")
RULE_KEYS = (
    "name",
    "decision",
    "priority",
    "labels",
    "min_confidence",
    "risk_level",
    *EXT_FACTS,
    "description",
)
# Vendor labels are letters, digits and underscores; a glob adds * ? [ ] and ! inside brackets.
_GLOB_CHARS = re.compile(r"[A-Za-z0-9_*?\[\]!\-]+")

__all__ = [
    "POLICY_DECISIONS",
    "Answer",
    "Policy",
    "PolicyError",
    "Rule",
    "Verdict",
    "evaluate",
    "parse_policy",
]


@dataclass(frozen=True)
class Rule:
    """One rule: every condition given must hold (None or empty: not a condition)."""

    name: str
    decision: str
    priority: int | None = None
    labels: tuple[str, ...] = ()
    min_confidence: float | None = None
    risk_levels: tuple[str, ...] = ()
    custom_image: bool | None = None
    custom_text: bool | None = None
    risk_words: bool | None = None
    description: str | None = None
    patterns: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Compiled once per policy, not per answer: a decide run evaluates every rule per row.
        object.__setattr__(self, "patterns", tuple(_compile(glob) for glob in self.labels))


@dataclass(frozen=True)
class Policy:
    """A parsed, valid policy. ``content_hash`` is the SHA-256 of the file's bytes, stored with
    every decision so two files both calling themselves "v3" are told apart."""

    name: str
    version: str
    rules: tuple[Rule, ...]
    default: str
    content_hash: str
    source: str
    description: str | None = None

    @property
    def needs_labels(self) -> bool:
        """True when some rule reads labels or confidences (a decide run reads them then)."""
        return any(rule.labels or rule.min_confidence is not None for rule in self.rules)

    @property
    def needs_ext(self) -> bool:
        """True when some rule reads an Ext fact."""
        return any(getattr(rule, fact) is not None for rule in self.rules for fact in EXT_FACTS)


@dataclass(frozen=True)
class Answer:
    """The facts of one stored answer a policy can read."""

    risk_level: str | None
    labels: tuple[tuple[str, float | None], ...] = ()
    custom_image: bool = False
    custom_text: bool = False
    risk_words: bool = False


@dataclass(frozen=True)
class Verdict:
    """What a policy decided, and which rule did (None: the policy's ``default``)."""

    decision: str
    rule: str | None
    priority: int | None


def _compile(glob: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(glob))


def _filled(value: Any) -> bool:
    """True for an Ext array or object that holds something (the vendor sends ``null`` too)."""
    return bool(value) if isinstance(value, list | dict | str) else False


def answer_facts(
    risk_level: str | None,
    labels: Sequence[tuple[str, float | None]] = (),
    ext: Mapping[str, Any] | None = None,
) -> Answer:
    """The :class:`Answer` of a stored answer: its RiskLevel, labels and the Ext object as the
    API returned it (the vendor's Table 4: ``CustomImage``; ``TextInImage.CustomText`` and
    ``TextInImage.RiskWord``; either may be ``null``)."""
    text = ext.get("TextInImage") if isinstance(ext, Mapping) else None
    text = text if isinstance(text, Mapping) else {}
    return Answer(
        risk_level=risk_level,
        labels=tuple(labels),
        custom_image=_filled(ext.get("CustomImage")) if isinstance(ext, Mapping) else False,
        custom_text=_filled(text.get("CustomText")),
        risk_words=_filled(text.get("RiskWord")),
    )


def _labels_match(rule: Rule, answer: Answer) -> bool:
    patterns = rule.patterns
    floor = rule.min_confidence
    for label, confidence in answer.labels:
        if patterns and not any(p.match(label) for p in patterns):
            continue
        if floor is not None and (confidence is None or confidence < floor):
            continue
        return True
    return False


def matches(rule: Rule, answer: Answer) -> bool:
    """True when every condition of ``rule`` holds for ``answer``.

    ``labels`` and ``min_confidence`` apply to the same label: some label must match a glob
    and reach the confidence; a label without a confidence (``nonLabel``) never reaches one.
    """
    if rule.risk_levels and answer.risk_level not in rule.risk_levels:
        return False
    if (rule.labels or rule.min_confidence is not None) and not _labels_match(rule, answer):
        return False
    return all(
        wanted is None or wanted == got
        for wanted, got in (
            (rule.custom_image, answer.custom_image),
            (rule.custom_text, answer.custom_text),
            (rule.risk_words, answer.risk_words),
        )
    )


def evaluate(policy: Policy, answer: Answer) -> Verdict:
    """The first rule that matches decides; no rule matching, the policy's ``default``."""
    for rule in policy.rules:
        if matches(rule, answer):
            priority = (rule.priority or 0) if rule.decision == "review" else None
            return Verdict(rule.decision, rule.name, priority)
    return Verdict(policy.default, None, 0 if policy.default == "review" else None)


# --------------------------------------------------------------------------- parsing


class _Fields:
    """Reads one table of the document, raising a :class:`PolicyError` that names the line."""

    def __init__(self, table: Mapping[str, Any], path: tuple[str | int, ...], ctx: _Context):
        self.table, self.path, self.ctx = table, path, ctx

    def fail(self, key: str, message: str) -> PolicyError:
        return self.ctx.error((*self.path, key), message)

    def text(self, key: str, *, required: bool = False) -> str | None:
        value = self.table.get(key)
        if value is None:
            if required:
                raise self.ctx.error((*self.path, key), "is missing", at=self.path)
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"must be a non-empty string, not {_shown(value)}")
        return value.strip()

    def flag(self, key: str) -> bool | None:
        value = self.table.get(key)
        if value is None or isinstance(value, bool):
            return value
        raise self.fail(key, f"must be true or false, not {_shown(value)}")

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.table.get(key)
        if value is None:
            return ()
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not values:
            raise self.fail(
                key, f"must be a string or a non-empty list of strings, not {_shown(value)}"
            )
        for one in values:
            if not isinstance(one, str):
                raise self.fail(key, f"must hold strings only, not {_shown(one)}")
        return tuple(values)

    def unknown(self, allowed: Sequence[str]) -> None:
        for key in self.table:
            if key not in allowed:
                raise self.fail(key, f"is not a policy key; use one of {', '.join(allowed)}")


@dataclass(frozen=True)
class _Context:
    source: str
    lines: Mapping[tuple[str | int, ...], int]

    def field(self, path: tuple[str | int, ...]) -> str:
        out = ""
        for part in path:
            out += f"[{part + 1}]" if isinstance(part, int) else (f".{part}" if out else part)
        return out

    def line(self, path: tuple[str | int, ...]) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None

    def error(
        self, path: tuple[str | int, ...], message: str, at: tuple[str | int, ...] | None = None
    ) -> PolicyError:
        """An error about the field at ``path``, on the line of ``at`` (default: ``path``, or
        the nearest enclosing table found: a missing key has no line of its own)."""
        name = self.field(path)
        text = f"{name}: {message}" if name else message
        return PolicyError(self.source, self.line(path if at is None else at), name or None, text)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _glob_problem(glob: str) -> str | None:
    if not _GLOB_CHARS.fullmatch(glob):
        return "a label is letters, digits and _ (a glob adds * ? [ ] !)"
    depth = 0
    for char in glob:
        if char == "[":
            if depth:
                return "it has a [ inside [...]"
            depth = 1
        elif char == "]":
            if not depth:
                return "it has a ] without its ["
            depth = 0
    return "it has a [ without its ]" if depth else None


def _rule(table: Any, index: int, ctx: _Context) -> Rule:
    path: tuple[str | int, ...] = ("rules", index)
    if not isinstance(table, Mapping):
        raise ctx.error(path, f"must be a table ([[rules]]), not {_shown(table)}")
    fields = _Fields(table, path, ctx)
    fields.unknown(RULE_KEYS)
    name = fields.text("name", required=True)
    decision = fields.text("decision", required=True)
    if decision not in POLICY_DECISIONS:
        raise fields.fail("decision", f"{decision!r} is not a decision; use block, review or pass")
    priority = table.get("priority")
    if priority is not None:
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise fields.fail("priority", f"must be a whole number, not {_shown(priority)}")
        if decision != "review":
            raise fields.fail("priority", 'orders reviews; give it only to decision = "review"')
    labels = fields.strings("labels")
    for glob in labels:
        problem = _glob_problem(glob)
        if problem:
            raise fields.fail("labels", f"{glob!r} is not a label or glob: {problem}")
    floor = table.get("min_confidence")
    if floor is not None:
        if isinstance(floor, bool) or not isinstance(floor, int | float):
            raise fields.fail("min_confidence", f"must be a number 0-100, not {_shown(floor)}")
        if not 0 <= floor <= 100:
            raise fields.fail("min_confidence", f"{floor:g} is out of 0-100 (the vendor's range)")
    risk_levels = fields.strings("risk_level")
    for level in risk_levels:
        if level not in RISK_LEVELS:
            raise fields.fail(
                "risk_level", f"{level!r} is not a RiskLevel; use high, medium, low or none"
            )
    assert name is not None and decision is not None  # required above
    return Rule(
        name=name,
        decision=decision,
        priority=priority,
        labels=labels,
        min_confidence=None if floor is None else float(floor),
        risk_levels=risk_levels,
        custom_image=fields.flag("custom_image"),
        custom_text=fields.flag("custom_text"),
        risk_words=fields.flag("risk_words"),
        description=fields.text("description"),
    )


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Parse and validate a policy file's text; ``source`` names it in errors.

    Raises :class:`PolicyError` (file, line, field and what to do) for TOML that does not parse,
    a wrong type, an unknown key, an unknown decision or RiskLevel, a bad glob, a confidence
    outside 0-100, a priority on a rule that is not a review, or two rules of one name.
    """
    document = load_toml(text, source)
    ctx = _Context(source, locate_keys(text))
    top = _Fields(document, (), ctx)
    top.unknown(TOP_KEYS)
    name = top.text("name", required=True)
    version = document.get("version")
    if isinstance(version, int) and not isinstance(version, bool):
        version = str(version)
    if not isinstance(version, str) or not version.strip():
        if version is None:
            raise ctx.error(("version",), 'is missing (a string such as "1" or "2026-12")')
        raise ctx.error(("version",), f"must be a string or a whole number, not {_shown(version)}")
    default = top.text("default") or "review"
    if default not in POLICY_DECISIONS:
        raise ctx.error(("default",), f"{default!r} is not a decision; use block, review or pass")
    tables = document.get("rules", [])
    if not isinstance(tables, list):
        raise ctx.error(("rules",), "must be an array of tables ([[rules]])")
    rules = tuple(_rule(table, index, ctx) for index, table in enumerate(tables))
    seen: dict[str, int] = {}
    for index, rule in enumerate(rules):
        if rule.name in seen:
            raise ctx.error(
                ("rules", index, "name"),
                f"{rule.name!r} names two rules (rules[{seen[rule.name] + 1}] too); "
                "give each rule its own name",
            )
        seen[rule.name] = index
    assert name is not None
    return Policy(
        name=name,
        version=version.strip(),
        rules=rules,
        default=default,
        content_hash=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        source=source,
        description=top.text("description"),
    )
