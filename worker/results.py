"""Typed views of an ImageModeration answer, one frozen dataclass per table of the vendor page.

:func:`parse_response` is pure and lenient about the shapes the vendor's own examples show
(``null`` where an array is documented, a missing ``Confidence`` on ``nonLabel``, integers where
floats are documented, ``DataId: ""``, extra fields) and about gateway error bodies
(``{"RequestId", "HostId", "Code": "SignatureDoesNotMatch", "Message", ...}``). Only a body that
is not a JSON object is refused, with :class:`MalformedResponse`. The raw JSON is kept beside the
typed fields, so nothing the service said is lost: ``parse_response(x).raw == json.loads(x)``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class MalformedResponse(ValueError):
    """The body is not a JSON object; the message says what it was instead (never the body)."""


@dataclass(frozen=True)
class Label:
    """Table 3, ``Result``: one risk label. ``nonLabel`` carries no confidence."""

    label: str
    confidence: float | None = None
    description: str | None = None
    risk_level: str | None = None


@dataclass(frozen=True)
class Location:
    """Table 12: a box in pixels, origin at the image's upper-left corner."""

    x: float
    y: float
    w: float
    h: float


@dataclass(frozen=True)
class CustomImage:
    """Table 5: a hit in a custom image library."""

    lib_id: str | None = None
    lib_name: str | None = None
    image_id: str | None = None


@dataclass(frozen=True)
class OcrLine:
    """Table 7: one recognised line of text."""

    text: str


@dataclass(frozen=True)
class CustomText:
    """Table 8: a hit in a custom keyword library."""

    lib_id: str | None = None
    lib_name: str | None = None
    key_words: str | None = None


@dataclass(frozen=True)
class TextInImage:
    """Table 6: the text found in the image and what in it was risky."""

    ocr_result: tuple[OcrLine, ...] = ()
    risk_words: tuple[str, ...] = ()
    custom_text: tuple[CustomText, ...] = ()


@dataclass(frozen=True)
class PublicFigure:
    """Table 9: an identified person; the vendor gives a name or, for some people, only an id."""

    figure_name: str | None = None
    figure_id: str | None = None
    locations: tuple[Location, ...] = ()

    @property
    def name_or_id(self) -> str | None:
        """The vendor's advice: read the name first, the id when the name is empty."""
        return self.figure_name or self.figure_id


@dataclass(frozen=True)
class Logo:
    """Table 11: one logo recognised in a logo area."""

    name: str | None = None
    label: str | None = None
    confidence: float | None = None


@dataclass(frozen=True)
class LogoData:
    """Table 10: the logos of one area and where the area is."""

    logos: tuple[Logo, ...] = ()
    location: Location | None = None


@dataclass(frozen=True)
class Ext:
    """Table 4: auxiliary information, returned for the ``infoType`` values requested."""

    custom_image: tuple[CustomImage, ...] = ()
    text_in_image: TextInImage | None = None
    public_figure: tuple[PublicFigure, ...] = ()
    logo_data: tuple[LogoData, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class ModerationData:
    """Table 2, ``Data``. ``data_id`` is None when the service echoes an empty ``DataId``."""

    result: tuple[Label, ...] = ()
    risk_level: str | None = None
    data_id: str | None = None
    ext: Ext | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(item.label for item in self.result)


@dataclass(frozen=True)
class ModerationResponse:
    """The whole answer: the documented top level, or a gateway error body (string ``code``)."""

    request_id: str | None
    code: int | str | None
    msg: str | None
    data: ModerationData | None
    raw: Mapping[str, Any] = field(hash=False)
    http_status: int | None = None

    @property
    def ok(self) -> bool:
        return self.code == 200


def _text(value: Any) -> str | None:
    """A string field; numbers become their text (an id may arrive as 12345), the rest None."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return str(value)
    return None


def _number(value: Any) -> float | None:
    """A float field; integers (``"Confidence": 81``) and numeric strings are accepted."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _objects(value: Any) -> list[Mapping[str, Any]]:
    """The objects of an array field; ``null`` (a vendor quirk) is an empty array."""
    if isinstance(value, Mapping):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, Mapping)]
    return []


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(text for text in map(_text, value) if text is not None)
    return ()


def _code(value: Any) -> int | str | None:
    """``Code`` is an integer in answers and a string in gateway errors; ``"200"`` is 200."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else str(value)
    if isinstance(value, str):
        stripped = value.strip()
        return int(stripped) if stripped.isascii() and stripped.isdigit() else stripped or None
    return None


def _location(obj: Any) -> Location | None:
    """A box needs all four numbers; anything less is dropped (and kept in ``raw``)."""
    if isinstance(obj, list):
        obj = next(iter(_objects(obj)), None)
    if not isinstance(obj, Mapping):
        return None
    x, y, w, h = (_number(obj.get(key)) for key in ("X", "Y", "W", "H"))
    if x is None or y is None or w is None or h is None:
        return None
    return Location(x=x, y=y, w=w, h=h)


def _label(obj: Mapping[str, Any]) -> Label:
    return Label(
        label=_text(obj.get("Label")) or "",
        confidence=_number(obj.get("Confidence")),
        description=_text(obj.get("Description")),
        risk_level=_text(obj.get("RiskLevel")),
    )


def _text_in_image(obj: Any) -> TextInImage | None:
    if not isinstance(obj, Mapping):
        return None
    return TextInImage(
        ocr_result=tuple(
            OcrLine(text=_text(line.get("Text")) or "") for line in _objects(obj.get("OcrResult"))
        ),
        risk_words=_strings(obj.get("RiskWord")),
        custom_text=tuple(
            CustomText(
                lib_id=_text(hit.get("LibId")),
                lib_name=_text(hit.get("LibName")),
                key_words=_text(hit.get("KeyWords")),
            )
            for hit in _objects(obj.get("CustomText"))
        ),
    )


def _public_figure(obj: Mapping[str, Any]) -> PublicFigure:
    boxes = (_location(box) for box in _objects(obj.get("Location")))
    return PublicFigure(
        figure_name=_text(obj.get("FigureName")),
        figure_id=_text(obj.get("FigureId")),
        locations=tuple(box for box in boxes if box is not None),
    )


def _logo_data(obj: Mapping[str, Any]) -> LogoData:
    return LogoData(
        logos=tuple(
            Logo(
                name=_text(logo.get("Name")),
                label=_text(logo.get("Label")),
                confidence=_number(logo.get("Confidence")),
            )
            for logo in _objects(obj.get("Logo"))
        ),
        location=_location(obj.get("Location")),
    )


def _ext(obj: Any) -> Ext | None:
    if not isinstance(obj, Mapping):
        return None
    return Ext(
        custom_image=tuple(
            CustomImage(
                lib_id=_text(hit.get("LibId")),
                lib_name=_text(hit.get("LibName")),
                image_id=_text(hit.get("ImageId")),
            )
            for hit in _objects(obj.get("CustomImage"))
        ),
        text_in_image=_text_in_image(obj.get("TextInImage")),
        public_figure=tuple(_public_figure(item) for item in _objects(obj.get("PublicFigure"))),
        logo_data=tuple(_logo_data(item) for item in _objects(obj.get("LogoData"))),
        raw=obj,
    )


def _data(obj: Any) -> ModerationData | None:
    if not isinstance(obj, Mapping):
        return None
    return ModerationData(
        result=tuple(_label(item) for item in _objects(obj.get("Result"))),
        risk_level=_text(obj.get("RiskLevel")),
        data_id=_text(obj.get("DataId")) or None,
        ext=_ext(obj.get("Ext")),
        raw=obj,
    )


def _first_text(obj: Mapping[str, Any], *keys: str) -> str | None:
    """The first of ``keys`` present as text: answers say ``Msg``, gateway errors ``Message``."""
    for key in keys:
        text = _text(obj.get(key))
        if text is not None:
            return text
    return None


def _load(body: bytes | str) -> Any:
    if isinstance(body, bytes | bytearray):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedResponse("the response body is not UTF-8 text") from None
    if not body.strip():
        raise MalformedResponse("the response body is empty")
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise MalformedResponse(
            f"the response body is not JSON ({exc.msg} at character {exc.pos}, "
            f"{len(body)} characters in all)"
        ) from None


def parse_response(
    body: bytes | str | Mapping[str, Any], http_status: int | None = None
) -> ModerationResponse:
    """Parse one answer of ImageModeration (or of the gateway in front of it).

    Raises :class:`MalformedResponse` when the body is not a JSON object; everything else is
    accepted, with fields that are missing or of an unexpected type read as empty.
    """
    document = body if isinstance(body, Mapping) else _load(body)
    if not isinstance(document, Mapping):
        raise MalformedResponse(
            f"the response body is JSON but not an object (a {type(document).__name__})"
        )
    return ModerationResponse(
        request_id=_first_text(document, "RequestId", "requestId"),
        code=_code(document.get("Code")),
        msg=_first_text(document, "Msg", "Message"),
        data=_data(document.get("Data")),
        raw=document,
        http_status=http_status,
    )
