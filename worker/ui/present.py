"""How a stored answer reads on the page, pure: Ext facts as short lists of text, a picture
from an item row. Everything returned is plain text; the templates escape it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worker.ui.images import Picture

MAX_FACTS = 20  # lines per kind of fact: an OCR of a poster can be hundreds


def _texts(values: Any, *keys: str) -> list[str]:
    found: list[str] = []
    for value in values if isinstance(values, list) else []:
        if isinstance(value, Mapping):
            parts = [str(value[k]) for k in keys if value.get(k) not in (None, "")]
            if parts:
                found.append(" / ".join(parts))
        elif value not in (None, ""):
            found.append(str(value))
    return found[:MAX_FACTS]


def ext_facts(ext: Any) -> list[tuple[str, list[str]]]:
    """(heading, lines) for the Ext facts of an answer: text in the image, risk words, custom
    text and image library hits, logos, public figures. Unknown keys are left to the raw view."""
    if not isinstance(ext, Mapping):
        return []
    facts: list[tuple[str, list[str]]] = []
    text = ext.get("TextInImage")
    if isinstance(text, Mapping):
        facts.append(("Text in image", _texts(text.get("OcrResult"), "Text")))
        facts.append(("Risk words", _texts(text.get("RiskWord"))))
        facts.append(("Custom text library", _texts(text.get("CustomText"), "LibName", "KeyWords")))
    facts.append(("Custom image library", _texts(ext.get("CustomImage"), "LibName", "ImageId")))
    logos: list[str] = []
    for hit in ext.get("LogoData") or [] if isinstance(ext.get("LogoData"), list) else []:
        if isinstance(hit, Mapping):
            logos += _texts(hit.get("Logo"), "Name", "Label", "Confidence")
    facts.append(("Logos", logos[:MAX_FACTS]))
    facts.append(("Public figures", _texts(ext.get("PublicFigure"), "FigureName", "FigureId")))
    return [(heading, lines) for heading, lines in facts if lines]


def picture(item: Mapping[str, Any]) -> Picture:
    """The :class:`Picture` of an item row (a mapping of ``items`` columns)."""
    return Picture(
        item_id=int(item["id"]),
        kind=str(item.get("kind") or ""),
        image_url=item.get("image_url"),
        bucket=item.get("oss_bucket"),
        key=item.get("oss_object"),
        region=item.get("oss_region"),
        local_path=item.get("local_path"),
    )
