"""Every response example of the vendor page parses into typed fields and round-trips raw."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from worker.results import (
    CustomImage,
    CustomText,
    Label,
    Location,
    Logo,
    LogoData,
    MalformedResponse,
    ModerationResponse,
    OcrLine,
    PublicFigure,
    TextInImage,
    parse_response,
)

VENDOR = Path(__file__).resolve().parents[1] / "data" / "vendor"
RESPONSES = sorted(VENDOR.glob("response_*.json"))


def fixture(name: str) -> bytes:
    return (VENDOR / f"response_{name}.json").read_bytes()


def test_every_vendor_example_is_a_fixture() -> None:
    assert len(RESPONSES) == 8
    assert (VENDOR / "request.json").exists()


@pytest.mark.parametrize("path", RESPONSES, ids=lambda p: p.stem)
def test_vendor_example_round_trips_raw(path: Path) -> None:
    body = path.read_bytes()
    parsed = parse_response(body)
    assert parsed.raw == json.loads(body)
    assert parsed.ok
    assert parsed.code == 200
    assert parsed.data is not None
    assert parsed.data.raw == json.loads(body)["Data"]


@pytest.mark.parametrize("path", RESPONSES, ids=lambda p: p.stem)
def test_vendor_example_parses_from_str_bytes_and_mapping_alike(path: Path) -> None:
    body = path.read_bytes()
    assert parse_response(body) == parse_response(body.decode()) == parse_response(json.loads(body))


def test_risky_image_example() -> None:
    parsed = parse_response(fixture("risk_detected"), http_status=200)
    assert parsed.request_id == "ABCD1234-1234-1234-1234-1234XYZ"
    assert parsed.msg == "OK"
    assert parsed.http_status == 200
    assert parsed.data is not None
    assert parsed.data.data_id == "img123****"
    assert parsed.data.risk_level == "high"
    assert parsed.data.ext is None
    assert parsed.data.result == (
        Label("pornographic_adultContent", 81.0, "Adult pornographic content"),
        Label("sexual_partialNudity", 98.0, "Partial nudity or sexy"),
        Label("violent_explosion", 70.0, "Fireworks content"),
        Label("violent_explosion_lib", 81.0, "Fireworks content_Hit custom library"),
    )
    assert parsed.data.labels[0] == "pornographic_adultContent"


def test_integer_confidence_becomes_a_float() -> None:
    parsed = parse_response(fixture("risk_detected"))
    assert parsed.data is not None
    assert all(type(label.confidence) is float for label in parsed.data.result)


def test_no_risk_example_has_non_label_without_confidence() -> None:
    parsed = parse_response(fixture("no_risk"))
    assert parsed.data is not None
    assert parsed.data.risk_level == "none"
    assert parsed.data.result == (Label("nonLabel", None, "No risk detected", None),)


def test_allowlist_example() -> None:
    parsed = parse_response(fixture("allowlist_hit"))
    assert parsed.data is not None
    assert parsed.data.risk_level == "none"
    assert parsed.data.result == (Label("nonLabel_lib", 83.0, "Hit allowlist"),)


def test_custom_image_library_example() -> None:
    parsed = parse_response(fixture("custom_image_hit"))
    assert parsed.msg == "success"
    assert parsed.request_id == "5F572704-4C03-51DF-8957-D77BF6E7444E"
    data = parsed.data
    assert data is not None
    assert data.data_id is None  # the service echoes "" when no dataId was sent
    assert data.result == (
        Label(
            "pornographic_adultContent_lib", 100.0, "Adult pornographic content_Hit custom library"
        ),
    )
    assert data.ext is not None
    assert data.ext.custom_image == (CustomImage("TEST20240307", "Risk Image Library A", "12345"),)
    assert data.ext.text_in_image is None
    assert data.ext.public_figure == ()
    assert data.ext.logo_data == ()
    assert data.ext.raw == json.loads(fixture("custom_image_hit"))["Data"]["Ext"]


def test_custom_keyword_library_example_with_null_risk_words() -> None:
    data = parse_response(fixture("custom_keyword_hit")).data
    assert data is not None and data.ext is not None
    assert data.result == (
        Label(
            "pornographic_adultContent_tii_lib",
            99.0,
            "Text contains pornographic content_Hit custom library",
        ),
    )
    assert data.ext.text_in_image == TextInImage(
        ocr_result=(
            OcrLine("Text line 1"),
            OcrLine("Text line 2"),
            OcrLine("Text line 3 with custom keyword"),
        ),
        risk_words=(),
        custom_text=(CustomText("TEST20240307", "Text Blacklist A", "Custom Keyword 1"),),
    )


def test_text_in_image_example_with_null_custom_text() -> None:
    parsed = parse_response(fixture("text_in_image_violation"))
    assert parsed.request_id == "TESTZGL-0307-2024-0728-FOREVER"
    data = parsed.data
    assert data is not None and data.ext is not None
    assert data.result == (
        Label("political_politicalFigure_name_tii", 89.15, "Text contains leader's name"),
    )
    assert data.ext.text_in_image == TextInImage(
        ocr_result=(
            OcrLine("Text line 1"),
            OcrLine("Text line 2"),
            OcrLine("Text line 3 with risk content"),
        ),
        risk_words=("Risk Word 1",),
        custom_text=(),
    )


def test_logo_example() -> None:
    data = parse_response(fixture("logo_detected")).data
    assert data is not None and data.ext is not None
    assert data.result == (Label("pt_logotoSocialNetwork", 96.15, "Social platform logo"),)
    assert data.ext.logo_data == (
        LogoData(
            logos=(Logo("CCTV", "pt_logotoSocialNetwork", 96.15),),
            location=Location(x=45.0, y=30.0, w=100.0, h=44.0),
        ),
    )


def test_public_figure_example_with_null_figure_id() -> None:
    data = parse_response(fixture("public_figure_detected")).data
    assert data is not None and data.ext is not None
    assert data.risk_level == "high"
    assert data.result == (
        Label(
            "political_politicalFigure_3", 92.05, "Provincial and municipal government personnel"
        ),
    )
    assert data.ext.public_figure == (
        PublicFigure("Yang San", None, (Location(x=14.0, y=999.0, w=13.0, h=520.0),)),
    )
    assert data.ext.public_figure[0].name_or_id == "Yang San"


def test_figure_without_name_is_named_by_its_id() -> None:
    assert PublicFigure(figure_name="", figure_id="xxx001").name_or_id == "xxx001"


def test_per_label_risk_level_is_read() -> None:
    body = {"Code": 200, "Data": {"Result": [{"Label": "a", "RiskLevel": "medium"}]}}
    data = parse_response(body).data
    assert data is not None
    assert data.result == (Label("a", None, None, "medium"),)


def test_gateway_error_body_keeps_its_string_code_and_message() -> None:
    body = json.dumps(
        {
            "RequestId": "7A3B-XYZ",
            "HostId": "green-cip.ap-southeast-1.aliyuncs.com",
            "Code": "SignatureDoesNotMatch",
            "Message": "Specified signature does not match our calculation.",
            "Recommend": "https://api.aliyun.com/troubleshoot?q=SignatureDoesNotMatch",
        }
    )
    parsed = parse_response(body, http_status=400)
    assert parsed.code == "SignatureDoesNotMatch"
    assert parsed.msg == "Specified signature does not match our calculation."
    assert parsed.request_id == "7A3B-XYZ"
    assert parsed.http_status == 400
    assert parsed.data is None
    assert not parsed.ok
    assert parsed.raw["HostId"] == "green-cip.ap-southeast-1.aliyuncs.com"


def test_service_error_code_without_data() -> None:
    parsed = parse_response(b'{"Code":403,"Msg":"qps exceeded","RequestId":"r1"}')
    assert (parsed.code, parsed.msg, parsed.data, parsed.ok) == (403, "qps exceeded", None, False)


def test_numeric_string_code_is_an_integer() -> None:
    assert parse_response('{"Code":"200"}').code == 200
    assert parse_response('{"Code":200.0}').code == 200


def test_missing_fields_read_as_empty() -> None:
    parsed = parse_response(b"{}")
    assert parsed == ModerationResponse(None, None, None, None, {}, None)


def test_unknown_fields_are_kept_in_raw() -> None:
    body = {
        "Code": 200,
        "Data": {
            "Result": [{"Label": "nonLabel", "Extra": 1}],
            "Ext": {"FaceData": [{"Age": 30}], "TextInImage": {"OcrResult": [{"Text": "t"}]}},
            "NewField": "x",
        },
        "Future": True,
    }
    parsed = parse_response(json.dumps(body))
    assert parsed.raw == body
    assert parsed.data is not None and parsed.data.ext is not None
    assert parsed.data.raw["NewField"] == "x"
    assert parsed.data.ext.raw["FaceData"] == [{"Age": 30}]
    assert parsed.data.ext.text_in_image == TextInImage(ocr_result=(OcrLine("t"),))


def test_odd_shapes_are_tolerated() -> None:
    body = {
        "Code": 200,
        "Data": {
            "Result": [{"Label": "x", "Confidence": "12.5"}, "junk", None],
            "Ext": {
                "CustomImage": {"LibId": "one", "ImageId": 12345},
                "TextInImage": {"RiskWord": "single", "CustomText": None, "OcrResult": None},
                "PublicFigure": [{"FigureId": "xxx001", "Location": [{"X": 1, "Y": 2}]}],
                "LogoData": [{"Logo": None, "Location": [{"X": 1, "Y": 2, "W": 3, "H": 4}]}],
            },
        },
    }
    data = parse_response(body).data
    assert data is not None and data.ext is not None
    assert data.result == (Label("x", 12.5),)
    assert data.ext.custom_image == (CustomImage("one", None, "12345"),)
    assert data.ext.text_in_image == TextInImage(risk_words=("single",))
    assert data.ext.public_figure == (PublicFigure(None, "xxx001", ()),)
    assert data.ext.logo_data == (LogoData((), Location(1.0, 2.0, 3.0, 4.0)),)


@pytest.mark.parametrize("value", [True, "NaN", "high", [1], {"a": 1}, float("inf")])
def test_confidence_that_is_not_a_finite_number_reads_as_none(value: object) -> None:
    data = parse_response({"Code": 200, "Data": {"Result": [{"Confidence": value}]}}).data
    assert data is not None
    assert data.result[0].confidence is None


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "empty"),
        (b"   ", "empty"),
        (b"<html>502 Bad Gateway</html>", "not JSON"),
        (b'{"Code": 200', "not JSON"),
        (b"\xff\xfe{", "not UTF-8"),
        (b"[1, 2]", "not an object (a list)"),
        (b'"OK"', "not an object (a str)"),
        (b"null", "not an object (a NoneType)"),
        (b"200", "not an object (a int)"),
    ],
)
def test_body_that_is_not_a_json_object_is_malformed(body: bytes, says: str) -> None:
    with pytest.raises(MalformedResponse, match=r".") as info:
        parse_response(body)
    assert says in str(info.value)
    assert isinstance(info.value, ValueError)


def test_parsed_response_is_hashable_and_picklable() -> None:
    parsed = parse_response(fixture("logo_detected"))
    assert hash(parsed) == hash(parse_response(fixture("logo_detected")))
    assert pickle.loads(pickle.dumps(parsed)) == parsed
