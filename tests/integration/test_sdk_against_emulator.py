"""The vendor's official SDK signs and calls; the emulator must accept it like the real API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from alibabacloud_green20220302 import models
from alibabacloud_green20220302.client import Client
from alibabacloud_tea_openapi.exceptions import ClientException
from alibabacloud_tea_openapi.utils_models import Config

from tests.support import Emulator, running_emulator
from worker.emulator import expected_answer
from worker.emulator.samples import sample_image_bytes

pytestmark = pytest.mark.service

ALL_INFO = "customImage,textInImage,publicFigure,logoData"


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with running_emulator() as emulator:
        yield emulator


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _client(emu: Emulator, secret: str | None = None) -> Client:
    return Client(
        Config(
            access_key_id=emu.access_key_id,
            access_key_secret=secret or emu.access_key_secret,
            endpoint=emu.endpoint,
            protocol="HTTP",
        )
    )


def _request(params: dict[str, str]) -> models.ImageModerationRequest:
    return models.ImageModerationRequest(
        service="baselineCheck_global", service_parameters=json.dumps(params)
    )


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_the_official_sdk_is_accepted_and_gets_the_expected_labels(emu, image_server, n) -> None:
    response = _client(emu).image_moderation(
        _request(
            {"imageUrl": image_server.image_url(n), "dataId": f"sdk-{n}", "infoType": ALL_INFO}
        )
    )
    body = response.body.to_map()
    assert response.status_code == 200 and body["Code"] == 200
    expected = expected_answer(sample_image_bytes(n), f"sdk-{n}", ALL_INFO)
    for key in ("DataId", "Result", "RiskLevel"):
        assert body["Data"][key] == expected[key]
    # The SDK's models parse every Ext kind we send (to_map drops nulls, adds empty kinds).
    for kind, payload in expected.get("Ext", {}).items():
        assert body["Data"]["Ext"][kind] == _without_nulls(payload)
    assert response.body.data.result[0].label
    assert response.body.data.data_id == f"sdk-{n}"


def test_the_official_sdk_with_a_wrong_secret_gets_signature_does_not_match(
    emu, image_server
) -> None:
    with pytest.raises(ClientException) as caught:
        _client(emu, secret="not-the-secret").image_moderation(
            _request({"imageUrl": image_server.image_url(1)})
        )
    assert caught.value.code == "SignatureDoesNotMatch"
    assert caught.value.status_code == 400
