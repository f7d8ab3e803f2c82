"""aigcDetector_global through the emulator: its own label set and the implicit-identifier Ext
the official SDK's model declares, read by the official SDK and by a whole imgmod job."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from alibabacloud_green20220302 import models
from alibabacloud_green20220302.client import Client
from alibabacloud_tea_openapi.utils_models import Config

from tests.support import Emulator, running_emulator
from worker.emulator.aigc import expected_aigc_answer
from worker.emulator.samples import sample_image_bytes

pytestmark = pytest.mark.service

AIGC = "aigcDetector_global"
UGC, AIGC_MEDIUM, AIGC_HIGH, AIGC_MARKED = 0, 1, 6, 9  # sample images of each emulator row


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with running_emulator() as emulator:
        yield emulator


@pytest.mark.parametrize("n", [UGC, AIGC_MEDIUM, AIGC_HIGH, AIGC_MARKED])
def test_the_official_sdk_reads_aigc_labels_and_the_implicit_identifier(
    emu, image_server, n
) -> None:
    client = Client(
        Config(
            access_key_id=emu.access_key_id,
            access_key_secret=emu.access_key_secret,
            endpoint=emu.endpoint,
            protocol="HTTP",
        )
    )
    params = {"imageUrl": image_server.image_url(n), "dataId": f"aigc-{n}"}
    response = client.image_moderation(
        models.ImageModerationRequest(service=AIGC, service_parameters=json.dumps(params))
    )

    expected = expected_aigc_answer(sample_image_bytes(n), f"aigc-{n}")
    body = response.body.to_map()
    assert body["Code"] == 200 and body["Data"]["Result"] == expected["Result"]
    label = response.body.data.result[0].label
    assert label == ("nonLabel" if n == UGC else "aigc")
    marked = response.body.data.ext.aigc_data.aigc if response.body.data.ext else None
    if n == AIGC_MARKED:  # the SDK's own model parsed every field
        assert marked is not None and marked.label == "1"
        assert marked.produce_id == expected["Ext"]["AigcData"]["AIGC"]["ProduceID"]
    else:
        assert marked is None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_aigc_job_stores_the_aigc_answers(pipeline) -> None:
    images = [UGC, AIGC_MEDIUM, AIGC_HIGH, AIGC_MARKED]
    src = pipeline.write("aigc.txt", [pipeline.images.image_url(n) for n in images])
    pipeline.start_worker(concurrency=4)

    run = pipeline.imgmod("run", str(src), "--job", "aigc", "--service", AIGC)

    assert run.returncode == 0, run.stdout + run.stderr
    exported = pipeline.imgmod("export", "aigc", check=True).stdout.splitlines()
    by_url = {r["image_url"]: r for r in map(json.loads, exported)}
    for n in images:
        record = by_url[pipeline.images.image_url(n)]
        expected = expected_aigc_answer(sample_image_bytes(n), None)
        assert [x["label"] for x in record["labels"]] == [x["Label"] for x in expected["Result"]]
        assert record["risk_level"] == expected["RiskLevel"]
    assert by_url[pipeline.images.image_url(AIGC_MARKED)]["ext"]["AigcData"]["AIGC"]["Label"] == "1"
    assert pipeline.settled_stats()["billed"] == len(images)
