"""The emulator's deterministic moderation answers: a fixed table, a row chosen by the image bytes.

The emulator is a test double, not a classifier. The row is
``int.from_bytes(sha256(image_bytes)[:8], "big") % 16``, so the same bytes always get the same
answer and a test can predict it with :func:`expected_answer`. Labels come from the vendor's
baselineCheck_global list; confidences have two decimals; the overall ``RiskLevel`` is the
highest per-label level. ``Ext`` appears only when the request's ``infoType`` names a kind the
row has (``customImage`` -> ``CustomImage``, ``textInImage`` -> ``TextInImage``,
``publicFigure`` -> ``PublicFigure``, ``logoData`` -> ``LogoData``).

===  =======================================================================  ================
row  Result: Label (Confidence, RiskLevel)                                    Ext kind
===  =======================================================================  ================
0    nonLabel (no Confidence, none)                                           -
1    nonLabel (no Confidence, none)                                           -
2    nonLabel (no Confidence, none)                                           -
3    nonLabel (no Confidence, none)                                           -
4    nonLabel (no Confidence, none)                                           -
5    nonLabel_lib (83.00, none)                                               CustomImage
6    sexual_suggestiveContent (45.12, low)                                    -
7    pornographic_adultContent (81.22, high), sexual_cleavage (98.00, medium) -
8    violent_explosion (70.00, medium), violent_explosion_lib (81.00, high)   CustomImage
9    inappropriate_smoking (55.30, low)                                       -
10   contraband_drug (91.05, high)                                            -
11   political_politicalFigure_name_tii (89.15, high)                         TextInImage (a)
12   pornographic_adultContent_tii_lib (99.00, high)                          TextInImage (b)
13   pt_logo (96.15, high)                                                    LogoData
14   political_politicalFigure_3 (92.05, high)                                PublicFigure
15   QRCode (88.40, medium), inappropriate_tattoo (62.70, low)                -
===  =======================================================================  ================

TextInImage (a) has ``RiskWord`` and no ``CustomText``; (b) has ``CustomText`` and no ``RiskWord``.
``CustomImage`` carries ``ImageId`` = the first 12 hex digits of the image's sha256; the other
Ext payloads are the fixed values in :func:`_ext_payload`, shaped like the vendor's examples.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

RISK_ORDER = ("none", "low", "medium", "high")


@dataclass(frozen=True)
class LabelHit:
    label: str
    confidence: float | None
    description: str
    risk_level: str


@dataclass(frozen=True)
class AnswerRow:
    hits: tuple[LabelHit, ...]
    ext_kind: str | None = None  # the Ext key this row fills, e.g. "TextInImage"
    ext_variant: str = ""


_CLEAN = AnswerRow((LabelHit("nonLabel", None, "No risk detected", "none"),))

ANSWER_TABLE: tuple[AnswerRow, ...] = (
    _CLEAN,
    _CLEAN,
    _CLEAN,
    _CLEAN,
    _CLEAN,
    AnswerRow((LabelHit("nonLabel_lib", 83.00, "Hit allowlist", "none"),), "CustomImage"),
    AnswerRow(
        (LabelHit("sexual_suggestiveContent", 45.12, "Vulgar or sexually suggestive", "low"),)
    ),
    AnswerRow(
        (
            LabelHit("pornographic_adultContent", 81.22, "Adult pornographic content", "high"),
            LabelHit("sexual_cleavage", 98.00, "Female cleavage", "medium"),
        )
    ),
    AnswerRow(
        (
            LabelHit("violent_explosion", 70.00, "Fireworks content", "medium"),
            LabelHit(
                "violent_explosion_lib", 81.00, "Fireworks content_Hit custom library", "high"
            ),
        ),
        "CustomImage",
    ),
    AnswerRow((LabelHit("inappropriate_smoking", 55.30, "Smoking-related content", "low"),)),
    AnswerRow((LabelHit("contraband_drug", 91.05, "Drug-related content", "high"),)),
    AnswerRow(
        (
            LabelHit(
                "political_politicalFigure_name_tii", 89.15, "Text contains leader's name", "high"
            ),
        ),
        "TextInImage",
        "risk_word",
    ),
    AnswerRow(
        (
            LabelHit(
                "pornographic_adultContent_tii_lib",
                99.00,
                "Text contains pornographic content_Hit custom library",
                "high",
            ),
        ),
        "TextInImage",
        "custom_text",
    ),
    AnswerRow((LabelHit("pt_logo", 96.15, "Logo", "high"),), "LogoData"),
    AnswerRow(
        (
            LabelHit(
                "political_politicalFigure_3",
                92.05,
                "Provincial and municipal government personnel",
                "high",
            ),
        ),
        "PublicFigure",
    ),
    AnswerRow(
        (
            LabelHit("QRCode", 88.40, "QR code", "medium"),
            LabelHit("inappropriate_tattoo", 62.70, "Tattoo", "low"),
        )
    ),
)

# infoType value -> the Ext key it unlocks.
INFO_TYPE_EXT = {
    "customImage": "CustomImage",
    "textInImage": "TextInImage",
    "publicFigure": "PublicFigure",
    "logoData": "LogoData",
}


def parse_info_types(info_type: str | None) -> tuple[str, ...]:
    """Split the comma-separated ``infoType`` into its trimmed, non-empty values."""
    if not info_type:
        return ()
    return tuple(part.strip() for part in info_type.split(",") if part.strip())


def answer_row(image_sha256: bytes) -> AnswerRow:
    """The table row for an image, chosen by the first eight bytes of its sha256 digest."""
    return ANSWER_TABLE[int.from_bytes(image_sha256[:8], "big") % len(ANSWER_TABLE)]


def overall_risk(hits: tuple[LabelHit, ...]) -> str:
    """The vendor's rule: the overall RiskLevel is the highest per-label level."""
    return max((hit.risk_level for hit in hits), key=RISK_ORDER.index, default="none")


def _ext_payload(row: AnswerRow, image_sha256: bytes) -> Any:
    if row.ext_kind == "CustomImage":
        return [
            {
                "LibId": "lib0001",
                "LibName": "Custom Image Library A",
                "ImageId": image_sha256.hex()[:12],
            }
        ]
    if row.ext_kind == "TextInImage":
        ocr = [{"Text": "Text line 1"}, {"Text": "Text line 2"}]
        if row.ext_variant == "custom_text":
            return {
                "OcrResult": [*ocr, {"Text": "Text line 3 with custom keyword"}],
                "RiskWord": None,
                "CustomText": [
                    {
                        "LibId": "test20240307",
                        "LibName": "Custom Keyword Library A",
                        "KeyWords": "Custom Keyword 1",
                    }
                ],
            }
        return {
            "OcrResult": [*ocr, {"Text": "Text line 3 with risk content"}],
            "RiskWord": ["Risk Word 1"],
            "CustomText": None,
        }
    if row.ext_kind == "PublicFigure":
        return [
            {
                "FigureName": "John Doe",
                "FigureId": "xxx001",
                "Location": [{"X": 14, "Y": 99, "W": 13, "H": 52}],
            }
        ]
    if row.ext_kind == "LogoData":
        return [
            {
                "Logo": [{"Name": "DingTalk", "Label": "pt_logo", "Confidence": 96.15}],
                "Location": {"X": 41, "Y": 84, "W": 83, "H": 26},
            }
        ]
    return None


def answer_for_digest(
    image_sha256: bytes, data_id: str | None, info_types: tuple[str, ...]
) -> dict[str, Any]:
    """The ``Data`` object for an image known by its sha256 digest (raw 32 bytes)."""
    row = answer_row(image_sha256)
    result: list[dict[str, Any]] = []
    for hit in row.hits:
        item: dict[str, Any] = {"Label": hit.label}
        if hit.confidence is not None:
            item["Confidence"] = hit.confidence
        item["Description"] = hit.description
        item["RiskLevel"] = hit.risk_level
        result.append(item)
    data: dict[str, Any] = {
        "DataId": data_id or "",
        "Result": result,
        "RiskLevel": overall_risk(row.hits),
    }
    wanted = {INFO_TYPE_EXT[value] for value in info_types if value in INFO_TYPE_EXT}
    if row.ext_kind is not None and row.ext_kind in wanted:
        data["Ext"] = {row.ext_kind: _ext_payload(row, image_sha256)}
    return data


def expected_answer(image_bytes: bytes, data_id: str | None, info_type: str) -> dict[str, Any]:
    """The ``Data`` object the emulator returns for these bytes when no rule pins the image."""
    digest = hashlib.sha256(image_bytes).digest()
    return answer_for_digest(digest, data_id, parse_info_types(info_type))
