"""Rules that pin answers: parsing, matching, and the pinned Data object."""

from __future__ import annotations

import json

import pytest

from worker.emulator.rules import (
    Rule,
    load_rules,
    parse_rules,
    pinned_data,
    rule_for_sha256,
    rule_for_url,
)

DATA = {"Result": [{"Label": "violent_gun", "Confidence": 90.0}], "RiskLevel": "high"}


def test_rules_parse_from_a_list_or_an_object(tmp_path) -> None:
    items = [{"sha256": "AB" * 32, "code": 405}, {"url": "http://h/1.png", "data": DATA}]
    assert parse_rules(items) == parse_rules({"rules": items})
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"rules": items}))
    rules = load_rules(path)
    assert rules[0] == Rule("sha256", "ab" * 32, 405)
    assert rules[1].data == DATA


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"rule": []}, "list"),
        ([1], "object"),
        ([{"code": 405}], "exactly one"),
        ([{"url": "a", "sha256": "b", "code": 405}], "exactly one"),
        ([{"url": "", "code": 405}], "non-empty"),
        ([{"url": "a", "code": "405"}], "integer"),
        ([{"url": "a"}], "give data"),
        ([{"url": "a", "data": [1]}], "JSON object"),
    ],
)
def test_bad_rules_are_refused_naming_the_problem(document, message) -> None:
    with pytest.raises(ValueError, match=message):
        parse_rules(document)


def test_url_rules_match_exactly_or_by_substring_first_wins() -> None:
    rules = parse_rules(
        [
            {"url": "http://h/1.png", "code": 404},
            {"url_contains": "/flaky/", "code": 500},
            {"url_contains": "h/", "code": 403},
        ]
    )
    assert rule_for_url(rules, "http://h/1.png").code == 404
    assert rule_for_url(rules, "http://h/flaky/1.png").code == 500
    assert rule_for_url(rules, "http://h/2.png").code == 403
    assert rule_for_url(rules, "http://other/2.png") is None


def test_sha_rules_match_case_insensitively() -> None:
    rules = parse_rules([{"sha256": "AB" * 32, "code": 405}])
    assert rule_for_sha256(rules, "ab" * 32) is rules[0]
    assert rule_for_url(rules, "ab" * 32) is None


def test_pinned_data_echoes_the_data_id_unless_the_rule_sets_one() -> None:
    (rule,) = parse_rules([{"url": "u", "data": DATA}])
    assert pinned_data(rule, "d-1")["DataId"] == "d-1"
    assert pinned_data(rule, None)["DataId"] == ""
    (fixed,) = parse_rules([{"url": "u", "data": {**DATA, "DataId": "pinned"}}])
    assert pinned_data(fixed, "d-1")["DataId"] == "pinned"


def test_pinned_data_is_a_copy() -> None:
    (rule,) = parse_rules([{"url": "u", "data": DATA}])
    pinned_data(rule, "x")["Result"].clear()
    assert rule.data is not None and rule.data["Result"]
