"""The answer table: deterministic by bytes, shaped like the vendor's Data object."""

from __future__ import annotations

import hashlib
import re

import pytest

from worker.emulator import expected_answer
from worker.emulator.answers import (
    ANSWER_TABLE,
    RISK_ORDER,
    answer_for_digest,
    answer_row,
    overall_risk,
    parse_info_types,
)
from worker.emulator.samples import sample_image_bytes

ALL_INFO = "customImage,textInImage,publicFigure,logoData"

# The vendor's baselineCheck_global labels (plus the no-risk ones); _lib/_tii are suffixes.
VENDOR_LABEL_STEMS = {
    "nonLabel",
    "pornographic_adultContent",
    "sexual_suggestiveContent",
    "sexual_cleavage",
    "violent_explosion",
    "inappropriate_smoking",
    "contraband_drug",
    "political_politicalFigure_name",
    "pt_logo",
    "political_politicalFigure_3",
    "QRCode",
    "inappropriate_tattoo",
}


def _digest_for_row(row: int) -> bytes:
    """A sha256-sized digest whose first eight bytes select ``row``."""
    return row.to_bytes(8, "big") + b"\x00" * 24


def test_same_bytes_always_get_the_same_answer() -> None:
    data = b"\x89PNG\r\n\x1a\n-some-image"
    assert expected_answer(data, "d", ALL_INFO) == expected_answer(data, "d", ALL_INFO)


def test_row_is_chosen_by_the_first_eight_bytes_of_the_sha256() -> None:
    data = sample_image_bytes(11, "gif")
    digest = hashlib.sha256(data).digest()
    index = int.from_bytes(digest[:8], "big") % len(ANSWER_TABLE)
    assert answer_row(digest) is ANSWER_TABLE[index]


def test_many_sample_images_reach_every_row() -> None:
    rows = {answer_row(hashlib.sha256(sample_image_bytes(n)).digest()) for n in range(400)}
    assert len(rows) == len(set(ANSWER_TABLE))


@pytest.mark.parametrize("row", range(len(ANSWER_TABLE)))
def test_every_row_is_shaped_like_the_vendor_data_object(row: int) -> None:
    data = answer_for_digest(_digest_for_row(row), "img-1", parse_info_types(ALL_INFO))
    assert data["DataId"] == "img-1"
    assert data["RiskLevel"] in RISK_ORDER
    assert data["Result"]
    for item in data["Result"]:
        stem = re.sub(r"(_tii)?(_lib)?$", "", item["Label"])
        assert stem in VENDOR_LABEL_STEMS
        assert item["RiskLevel"] in RISK_ORDER
        assert isinstance(item["Description"], str)
        if item["Label"] == "nonLabel":
            assert "Confidence" not in item
            assert item["RiskLevel"] == "none"
        else:
            assert 0 <= item["Confidence"] <= 100
            assert round(item["Confidence"], 2) == item["Confidence"]
    assert data["RiskLevel"] == max(
        (item["RiskLevel"] for item in data["Result"]), key=RISK_ORDER.index
    )


def test_overall_risk_is_the_highest_label_level() -> None:
    hits = ANSWER_TABLE[7].hits
    assert {h.risk_level for h in hits} == {"high", "medium"}
    assert overall_risk(hits) == "high"


@pytest.mark.parametrize(
    ("row", "info_type", "ext_key"),
    [
        (5, "customImage", "CustomImage"),
        (8, "customImage", "CustomImage"),
        (11, "textInImage", "TextInImage"),
        (12, "textInImage", "TextInImage"),
        (13, "logoData", "LogoData"),
        (14, "publicFigure", "PublicFigure"),
    ],
)
def test_ext_is_returned_only_when_info_type_asks_for_it(
    row: int, info_type: str, ext_key: str
) -> None:
    digest = _digest_for_row(row)
    assert "Ext" not in answer_for_digest(digest, None, ())
    others = tuple(v for v in parse_info_types(ALL_INFO) if v != info_type)
    assert "Ext" not in answer_for_digest(digest, None, others)
    with_ext = answer_for_digest(digest, None, (info_type,))
    assert list(with_ext["Ext"]) == [ext_key]


def test_text_in_image_rows_carry_ocr_and_either_risk_words_or_custom_text() -> None:
    risk = answer_for_digest(_digest_for_row(11), None, ("textInImage",))["Ext"]["TextInImage"]
    custom = answer_for_digest(_digest_for_row(12), None, ("textInImage",))["Ext"]["TextInImage"]
    assert risk["OcrResult"] and risk["RiskWord"] and risk["CustomText"] is None
    assert custom["OcrResult"] and custom["CustomText"] and custom["RiskWord"] is None


def test_logo_and_figure_rows_carry_locations() -> None:
    logo = answer_for_digest(_digest_for_row(13), None, ("logoData",))["Ext"]["LogoData"][0]
    figure = answer_for_digest(_digest_for_row(14), None, ("publicFigure",))["Ext"]["PublicFigure"][
        0
    ]
    assert set(logo["Location"]) == {"X", "Y", "W", "H"} and logo["Logo"][0]["Name"]
    assert set(figure["Location"][0]) == {"X", "Y", "W", "H"} and figure["FigureName"]


def test_missing_data_id_is_returned_empty() -> None:
    assert expected_answer(b"x", None, "")["DataId"] == ""


def test_info_type_splits_on_commas_and_trims() -> None:
    assert parse_info_types(" customImage , textInImage,,") == ("customImage", "textInImage")
    assert parse_info_types(None) == ()
