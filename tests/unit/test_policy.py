"""worker.policy: parsing, validation (file, line, field) and evaluation, pure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worker.decide import DEFAULT_POLICY, decide_item, load_policy, render_changes
from worker.policy import Answer, PolicyError, answer_facts, evaluate, parse_policy
from worker.results import parse_response
from worker.store import DecisionInput

VENDOR = Path(__file__).resolve().parent.parent / "data" / "vendor"

GOOD = """\
name = "archive"
version = 3
default = "review"

[[rules]]
name = "adult"
labels = ["pornographic_*", "sexual_intimacy"]
min_confidence = 80
decision = "block"

[[rules]]
name = "custom-library"
custom_image = true
decision = "review"
priority = 10

[[rules]]
name = "risky-text"
risk_words = true
decision = "review"
priority = 5

[[rules]]
name = "keywords"
custom_text = true
decision = "block"

[[rules]]
name = "quiet"
risk_level = ["low", "none"]
decision = "pass"
"""


def vendor_answer(name: str) -> Answer:
    data = parse_response((VENDOR / name).read_text(encoding="utf-8")).data
    assert data is not None
    return answer_facts(
        data.risk_level,
        [(label.label, label.confidence) for label in data.result],
        dict(data.ext.raw) if data.ext is not None else None,
    )


def refused(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "mine.toml")
    return caught.value


def test_the_shipped_default_blocks_high_reviews_medium_and_passes_low_and_none():
    policy = load_policy(None)
    assert (policy.name, policy.version, policy.default) == ("default", "1", "review")
    decided = {
        level: evaluate(policy, Answer(risk_level=level)).decision
        for level in ("high", "medium", "low", "none", None)
    }
    assert decided == {
        "high": "block",
        "medium": "review",
        "low": "pass",
        "none": "pass",
        None: "review",
    }
    assert evaluate(policy, Answer(risk_level="medium")).priority == 50
    assert len(policy.content_hash) == 64
    assert policy.content_hash == parse_policy(DEFAULT_POLICY.read_text(), "x").content_hash


def test_rules_are_ordered_and_the_first_match_decides():
    policy = parse_policy(GOOD, "archive.toml")
    assert policy.version == "3"  # a whole number is read as its text
    adult = Answer("high", (("sexual_intimacy", 85.0),), custom_image=True)
    assert evaluate(policy, adult) == evaluate(policy, adult)
    assert evaluate(policy, adult).decision == "block"
    assert evaluate(policy, adult).rule == "adult"
    # below the confidence floor, the next rule (custom library hit) decides
    weak = Answer("high", (("pornographic_adultContent", 79.99),), custom_image=True)
    verdict = evaluate(policy, weak)
    assert (verdict.decision, verdict.rule, verdict.priority) == ("review", "custom-library", 10)


def test_globs_and_confidences_apply_to_the_same_label():
    policy = parse_policy(GOOD, "archive.toml")
    # a matching label with a low confidence and a confident label that matches no glob
    mixed = Answer("medium", (("pornographic_art", 20.0), ("violent_gun", 99.0)))
    assert evaluate(policy, mixed).rule is None  # no rule: the default
    assert evaluate(policy, mixed).decision == "review"
    # a label without a confidence (nonLabel) never reaches a floor
    assert evaluate(policy, Answer("high", (("pornographic_x", None),))).rule is None


def test_vendor_examples_are_decided_by_their_ext_facts():
    policy = parse_policy(GOOD, "archive.toml")
    custom_image = vendor_answer("response_custom_image_hit.json")
    assert custom_image.custom_image and not custom_image.custom_text
    keyword = vendor_answer("response_custom_keyword_hit.json")
    assert keyword.custom_text and not keyword.risk_words  # "RiskWord": null
    words = vendor_answer("response_text_in_image_violation.json")
    assert words.risk_words and not words.custom_text  # "CustomText": null
    assert evaluate(policy, custom_image).decision == "block"  # pornographic_..._lib at 100
    assert evaluate(policy, keyword).decision == "block"  # pornographic_..._tii_lib at 99
    assert (evaluate(policy, words).rule, evaluate(policy, words).priority) == ("risky-text", 5)
    assert evaluate(policy, vendor_answer("response_no_risk.json")).decision == "pass"


def test_a_false_ext_fact_asks_for_its_absence():
    policy = parse_policy(
        'name = "p"\nversion = "1"\ndefault = "pass"\n\n[[rules]]\nname = "no-lib"\n'
        'custom_image = false\nrisk_level = "high"\ndecision = "block"\n',
        "p.toml",
    )
    assert evaluate(policy, Answer("high")).decision == "block"
    assert evaluate(policy, Answer("high", custom_image=True)).decision == "pass"
    assert policy.needs_ext and not policy.needs_labels


def test_an_item_without_a_code_200_answer_is_unscanned_never_pass():
    policy = load_policy(None)

    def row(state: str, code: str | None, level: str | None = "none") -> DecisionInput:
        return DecisionInput(1, state, code, level, (), None, None)

    assert decide_item(policy, row("done", "200")).decision == "pass"
    for state, code in (("failed", "405"), ("rejected", None), ("queued", None), ("done", "500")):
        assert decide_item(policy, row(state, code)).decision == "unscanned"


@pytest.mark.parametrize(
    ("change", "line", "field", "words"),
    [
        ('decision = "blok"', 7, "rules[1].decision", "'blok' is not a decision"),
        ("min_confidence = 120", 7, "rules[1].min_confidence", "120 is out of 0-100"),
        ("min_confidence = -1", 7, "rules[1].min_confidence", "-1 is out of 0-100"),
        ('min_confidence = "80"', 7, "rules[1].min_confidence", "must be a number"),
        ('labels = ["porn[*"]', 7, "rules[1].labels", "a [ without its ]"),
        ('labels = ["porn ography"]', 7, "rules[1].labels", "is not a label or glob"),
        ("labels = [3]", 7, "rules[1].labels", "must hold strings only"),
        ('risk_level = "severe"', 7, "rules[1].risk_level", "'severe' is not a RiskLevel"),
        ("custom_image = 1", 7, "rules[1].custom_image", "must be true or false"),
        ("priority = 5", 7, "rules[1].priority", 'only to decision = "review"'),
        ('colour = "red"', 7, "rules[1].colour", "is not a policy key"),
    ],
)
def test_a_bad_rule_is_refused_with_file_line_and_field(change, line, field, words):
    text = (
        'name = "p"\nversion = "1"\n\n[[rules]]\nname = "first"\ndecision = "pass"\n\n'
        '[[rules]]\nname = "second"\ndecision = "block"\n'
    )
    # the change goes into the second rule, at line 11 (or replaces its decision on line 10)
    if change.startswith("decision"):
        text = text.replace('decision = "block"', change)
        line = 10
    else:
        text += change + "\n"
        line = 11
    error = refused(text)
    assert (error.source, error.line, error.field) == (
        "mine.toml",
        line,
        field.replace("[1]", "[2]"),
    )
    assert words in str(error)
    assert str(error).startswith(f"mine.toml, line {line}: rules[2].")


def test_two_rules_of_one_name_are_refused_at_the_second():
    error = refused(
        'name = "p"\nversion = "1"\n[[rules]]\nname = "a"\ndecision = "pass"\n'
        '[[rules]]\n# the same name again\nname = "a"\ndecision = "block"\n'
    )
    assert (error.line, error.field) == (8, "rules[2].name")
    assert "'a' names two rules (rules[1] too)" in str(error)


def test_top_level_mistakes_name_their_line():
    assert refused('name = "p"\nversion = "1"\nowner = "me"\n').line == 3
    assert refused('name = "p"\nversion = "1"\ndefault = "allow"\n').field == "default"
    missing = refused('name = "p"\n[[rules]]\nname = "a"\ndecision = "pass"\n')
    assert missing.field == "version" and "is missing" in str(missing)
    nameless = refused('version = "1"\n\n[[rules]]\ndecision = "pass"\n')
    assert nameless.field == "name"
    rule_without_name = refused('name = "p"\nversion = "1"\n\n[[rules]]\ndecision = "pass"\n')
    assert (rule_without_name.field, rule_without_name.line) == ("rules[1].name", 4)
    assert refused('name = "p"\nversion = 1.5\n').field == "version"
    assert refused('name = "p"\nversion = "1"\nrules = 3\n').field == "rules"


def test_toml_that_does_not_parse_is_refused_with_the_parser_s_line():
    error = refused('name = "p"\nversion = "1"\n[[rules]\nname = "a"\n')
    assert error.line == 3 and "not valid TOML" in str(error)
    assert str(error).startswith("mine.toml, line 3: ")


def test_a_multi_line_array_does_not_shift_the_lines_of_later_keys():
    error = refused(
        'name = "p"\nversion = "1"\n[[rules]]\nname = "a"\nlabels = [\n  "violent_[ab]*",\n'
        '  "x",\n]\ndecision = "maybe"\n'
    )
    assert (error.line, error.field) == (9, "rules[1].decision")


def test_content_hash_tells_two_files_of_one_version_apart():
    one = parse_policy(GOOD, "a.toml")
    two = parse_policy(GOOD.replace("min_confidence = 80", "min_confidence = 70"), "a.toml")
    assert one.version == two.version and one.content_hash != two.content_hash


def test_changes_read_as_a_sentence_most_frequent_first():
    from collections import Counter

    changes = Counter({("pass", "block"): 88, ("review", "pass"): 1204})
    assert render_changes(changes) == "1,204 review → pass, 88 pass → block"
    assert render_changes(Counter()) == "none"


def test_every_vendor_example_parses_into_facts():
    for path in sorted(VENDOR.glob("response_*.json")):
        facts = vendor_answer(path.name)
        assert facts.risk_level in ("high", "medium", "low", "none"), path.name
        assert json.loads(path.read_text())["Data"]["RiskLevel"] == facts.risk_level


def test_the_default_policy_ships_in_the_wheel():
    import tomllib

    root = Path(__file__).resolve().parents[2]
    tool = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "worker.policies" in tool["packages"]
    assert DEFAULT_POLICY.parent == root / "worker" / "policies"
    assert any(DEFAULT_POLICY.match(glob) for glob in tool["package-data"]["worker.policies"])
