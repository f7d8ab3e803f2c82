"""Parameter validation gives each vendor rule its body code: 400 empty, 401 invalid, 402 length."""

from __future__ import annotations

import json

import pytest

from worker.emulator.params import BodyError, ModerationRequest, OssObject, validate_request

URL = "http://127.0.0.1:8081/img/1.png"


def _fields(service: str = "baselineCheck_global", **params: object) -> dict[str, str]:
    return {"Service": service, "ServiceParameters": json.dumps(params)}


def _code(fields: dict[str, str]) -> int:
    result = validate_request(fields)
    return result.code if isinstance(result, BodyError) else 200


def test_a_complete_url_request_is_accepted_with_its_fields() -> None:
    result = validate_request(
        _fields(
            imageUrl=URL,
            dataId="img-1.a_b",
            referer="www.example.com",
            infoType="customImage, textInImage",
        )
    )
    assert result == ModerationRequest(
        service="baselineCheck_global",
        image_url=URL,
        oss=None,
        data_id="img-1.a_b",
        referer="www.example.com",
        info_types=("customImage", "textInImage"),
    )
    assert result.image_key == URL


def test_an_oss_triple_is_accepted_and_keyed_as_an_oss_url() -> None:
    result = validate_request(
        _fields(
            "aigcDetector_global",
            ossBucketName="b",
            ossObjectName="2022/a b.jpg",
            ossRegionId="cn-beijing",
        )
    )
    assert isinstance(result, ModerationRequest)
    assert result.oss == OssObject("cn-beijing", "b", "2022/a b.jpg")
    assert result.image_key == "oss://cn-beijing/b/2022/a b.jpg"


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"ServiceParameters": json.dumps({"imageUrl": URL})}, 400),
        ({"Service": "", "ServiceParameters": json.dumps({"imageUrl": URL})}, 400),
        ({"Service": "baselineCheck_global"}, 400),
        (_fields(), 400),
        (_fields(dataId="x"), 400),
        (_fields(ossBucketName="b", ossRegionId="r"), 400),
        (_fields("imageCheck", imageUrl=URL), 401),
        ({"Service": "baselineCheck_global", "ServiceParameters": "{not json"}, 401),
        ({"Service": "baselineCheck_global", "ServiceParameters": "[1]"}, 401),
        (_fields(imageUrl=123), 401),
        (_fields(imageUrl=URL, infoType="customImage,faces"), 401),
        (_fields(imageUrl=URL, ossBucketName="b", ossObjectName="o", ossRegionId="r"), 401),
        (_fields(imageUrl="ftp://example.com/a.png"), 401),
        (_fields(imageUrl="file:///etc/passwd"), 401),
        (_fields(imageUrl="http://"), 401),
        (_fields(imageUrl="http://example.com/图片.png"), 401),
        (_fields(imageUrl=URL, dataId="bad id!"), 401),
        (_fields(imageUrl="http://example.com/" + "a" * 2030), 402),
        (_fields(imageUrl=URL, dataId="a" * 65), 402),
        (_fields(imageUrl=URL, referer="r" * 257), 402),
    ],
)
def test_each_vendor_rule_gives_its_documented_code(fields: dict[str, str], code: int) -> None:
    assert _code(fields) == code


@pytest.mark.parametrize(
    "fields",
    [
        _fields(imageUrl="https://example.com/" + "a" * (2048 - 20)),
        _fields(imageUrl=URL, dataId="a" * 64),
        _fields(imageUrl=URL, referer="r" * 256),
    ],
)
def test_values_at_the_limit_are_accepted(fields: dict[str, str]) -> None:
    assert _code(fields) == 200


def test_error_messages_name_the_parameter() -> None:
    result = validate_request(_fields(imageUrl=URL, dataId="a" * 65))
    assert isinstance(result, BodyError) and "dataId" in result.message
