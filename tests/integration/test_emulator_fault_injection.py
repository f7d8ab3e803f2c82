"""Injected faults, latency, runtime config and the introspection endpoints, over real HTTP."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support import Emulator, running_emulator, wait_until

pytestmark = pytest.mark.service

QUIET = dict(
    qps=1000,
    latency_ms=0,
    jitter_ms=0,
    slow_ms=15000,
    fault_405=0,
    fault_500=0,
    fault_reset=0,
    fault_slow=0,
    fault_malformed=0,
    fault_gateway_5xx=0,
)


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with running_emulator(seed=1) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def quiet(emu: Emulator) -> None:
    emu.configure(**QUIET)
    emu.reset()


def test_reset_fault_drops_the_connection_without_billing(emu, image_server) -> None:
    emu.configure(fault_reset=1)
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        emu.moderate({"imageUrl": image_server.image_url(1)})
    stats = emu.stats()
    assert stats["by_code"] == {"reset": 1} and stats["billed"] == 0 and stats["calls"] == 1


def test_malformed_fault_is_http_200_with_an_unparsable_body(emu, image_server) -> None:
    emu.configure(fault_malformed=1)
    for _ in range(4):
        reply = emu.moderate({"imageUrl": image_server.image_url(1)})
        assert reply.status == 200
        with pytest.raises(ValueError):
            json.loads(reply.body)
    assert emu.stats()["by_code"] == {"malformed": 4} and emu.stats()["billed"] == 0


def test_gateway_5xx_fault_is_502_or_503_without_json(emu, image_server) -> None:
    emu.configure(fault_gateway_5xx=1)
    for _ in range(4):
        reply = emu.moderate({"imageUrl": image_server.image_url(1)})
        assert reply.status in (502, 503)
        assert reply.body == b"" or reply.body.startswith(b"<html>")
    assert emu.stats()["by_code"] == {"gateway_5xx": 4}


def test_fault_405_is_an_unbilled_code_405(emu, image_server) -> None:
    emu.configure(fault_405=1)
    assert emu.moderate({"imageUrl": image_server.image_url(1)}).json()["Code"] == 405
    assert emu.stats()["billed"] == 0


def test_a_slow_answer_the_client_gave_up_on_is_still_billed(emu, image_server) -> None:
    emu.configure(fault_slow=1, slow_ms=800)
    with pytest.raises(TimeoutError):
        emu.moderate({"imageUrl": image_server.image_url(1)}, timeout=0.2)
    wait_until(lambda: emu.stats()["billed"] == 1, 10, "the abandoned call to be billed")


def test_latency_is_added_before_answering(emu, image_server) -> None:
    emu.configure(latency_ms=300)
    started = time.monotonic()
    assert emu.moderate({"imageUrl": image_server.image_url(1)}).json()["Code"] == 200
    assert time.monotonic() - started >= 0.3


def test_concurrent_calls_show_in_max_concurrency(emu, image_server) -> None:
    emu.configure(latency_ms=400)
    with ThreadPoolExecutor(8) as pool:
        codes = list(
            pool.map(
                lambda n: emu.moderate({"imageUrl": image_server.image_url(n)}).json()["Code"],
                range(8),
            )
        )
    assert codes == [200] * 8
    stats = emu.stats()
    assert stats["max_concurrency"] == 8 and stats["billed"] == 8


def test_a_403_storm_can_start_mid_job(emu, image_server) -> None:
    assert emu.moderate({"imageUrl": image_server.image_url(1)}).json()["Code"] == 200
    emu.configure(qps=0)
    codes = {emu.moderate({"imageUrl": image_server.image_url(n)}).json()["Code"] for n in range(5)}
    assert codes == {403}
    assert emu.stats()["by_code"] == {"200": 1, "403": 5}


def test_reset_zeroes_the_counters(emu, image_server) -> None:
    emu.moderate({"imageUrl": image_server.image_url(1)})
    assert emu.stats()["calls"] == 1
    emu.reset()
    stats = emu.stats()
    assert (stats["calls"], stats["billed"], stats["by_code"], stats["billed_by_image"]) == (
        0,
        0,
        {},
        {},
    )


def test_bad_config_is_refused_with_the_reason(emu) -> None:
    with pytest.raises(ValueError, match="probability"):
        emu.configure(fault_500=2)
    with pytest.raises(ValueError, match="unknown knob"):
        emu.configure(qpss=1)


def test_config_changes_are_reported_back(emu) -> None:
    knobs = emu.configure(qps=7, jitter_ms=3)
    assert knobs["qps"] == 7 and knobs["jitter_ms"] == 3 and knobs["fault_500"] == 0


def test_seeded_faults_repeat_across_runs(image_server) -> None:
    def sequence() -> list[object]:
        with running_emulator(seed=99, fault_500=0.3, fault_405=0.3) as emulator:
            return [
                emulator.moderate({"imageUrl": image_server.image_url(n)}).json()["Code"]
                for n in range(12)
            ]

    first = sequence()
    assert first == sequence()
    assert {500, 405} <= set(first)
