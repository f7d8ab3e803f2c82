"""worker.store.answers, the pure part: a parked answer names its owner and serves no one else."""

from __future__ import annotations

import json

import pytest

from worker.store.answers import KEY_PREFIX, AnswerSlot, decode, encode

RAW = {"Code": 200, "RequestId": "R-1", "Data": {"RiskLevel": "none", "Text": "a\x00b"}}


def slot(**changes: object) -> AnswerSlot:
    fields: dict[str, object] = {
        "job_key": "k" * 24,
        "job_id": 1,
        "item_id": 7,
        "service": "baselineCheck_global",
        "reference": ("https://example.com/7.png", None, None, None, "d7", None),
    }
    fields.update(changes)
    return AnswerSlot(**fields)  # type: ignore[arg-type]


def test_the_key_names_the_job_across_databases_the_item_and_the_service() -> None:
    assert slot().key == f"{KEY_PREFIX}{'k' * 24}:7:baselineCheck_global"
    assert slot(job_key="other").key != slot().key
    assert slot(service="aigcDetector_global").key != slot().key


def test_an_answer_decodes_for_its_own_slot_unchanged() -> None:
    assert decode(slot(), encode(slot(), RAW)) == RAW


@pytest.mark.parametrize(
    "other",
    [
        {"job_key": "another-database"},
        {"job_id": 2},
        {"item_id": 8},
        {"service": "aigcDetector_global"},
        {"reference": ("https://example.com/other.png", None, None, None, "d7", None)},
        {"reference": ("https://example.com/7.png", None, None, None, "d8", None)},
    ],
)
def test_an_answer_parked_for_anyone_else_is_not_taken(other: dict[str, object]) -> None:
    """Even under the same key (a collision, a hand-made entry), the value is checked."""
    assert decode(slot(), encode(slot(**other), RAW)) is None


@pytest.mark.parametrize(
    "text",
    ["not json", "[]", json.dumps({"raw": RAW}), json.dumps({"format": 99, "raw": RAW}), "null"],
)
def test_values_of_another_shape_or_format_are_not_taken(text: str) -> None:
    assert decode(slot(), text) is None
