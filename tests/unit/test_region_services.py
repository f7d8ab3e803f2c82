"""The region table decides at enqueue: a service the endpoint's region does not list is refused
with the table's answer; the emulator's aigcDetector_global answers with its own labels."""

from __future__ import annotations

import hashlib

import pytest

from worker import producer
from worker.emulator.aigc import ROWS, aigc_answer_for_digest
from worker.settings import load_settings
from worker.vendor import InvalidParameter, region_of_endpoint, service_not_offered


@pytest.mark.parametrize(
    ("endpoint", "region"),
    [
        ("https://green-cip.ap-southeast-1.aliyuncs.com", "ap-southeast-1"),
        ("https://green-cip-vpc.us-east-1.aliyuncs.com", "us-east-1"),
        ("https://GREEN-CIP.eu-west-1.aliyuncs.com/", "eu-west-1"),
        ("http://127.0.0.1:8080", None),
    ],
)
def test_the_endpoint_names_its_region(endpoint: str, region: str | None) -> None:
    assert region_of_endpoint(endpoint) == region


def test_listed_regions_and_other_hosts_are_not_refused() -> None:
    for service in ("baselineCheck_global", "aigcDetector_global"):
        assert service_not_offered("https://green-cip.us-east-1.aliyuncs.com", service) is None
        assert service_not_offered("http://127.0.0.1:8080", service) is None  # an emulator


def test_a_region_whose_row_lists_no_service_gets_the_tables_answer() -> None:
    answer = service_not_offered("https://green-cip.eu-west-1.aliyuncs.com", "aigcDetector_global")
    assert answer is not None
    assert "lists aigcDetector_global for ap-southeast-1, us-east-1 only" in answer
    assert "UK (London)" in answer and "IMGMOD_REGION" in answer


def test_open_job_refuses_before_anything_is_written() -> None:
    settings = load_settings({"IMGMOD_REGION": "eu-central-1"})
    with pytest.raises(InvalidParameter) as caught:
        producer.open_job(None, settings, "job", service="aigcDetector_global")  # type: ignore[arg-type]
    assert caught.value.field == "Service" and "eu-central-1" in caught.value.reason


def test_aigc_answers_are_nonlabel_or_aigc_and_the_marked_row_carries_the_identifier() -> None:
    seen = {}
    for n in range(200):
        digest = hashlib.sha256(str(n).encode()).digest()
        data = aigc_answer_for_digest(digest, "d")
        seen[int.from_bytes(digest[:8], "big") % ROWS] = data
    assert {d["Result"][0]["Label"] for d in seen.values()} == {"nonLabel", "aigc"}
    assert all(d["DataId"] == "d" for d in seen.values())
    marked = [d for d in seen.values() if "Ext" in d]
    assert len(marked) == 1
    assert set(marked[0]["Ext"]["AigcData"]["AIGC"]) == {
        "Label",
        "ContentProducer",
        "ProduceID",
        "ContentPropagator",
        "PropagateID",
        "ReservedCode1",
        "ReservedCode2",
    }
