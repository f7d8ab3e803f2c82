"""The command line: options parse, bad ones are refused with a usage error."""

from __future__ import annotations

import subprocess
import sys

import pytest

from worker.processes import ServerStartError, emulator_args, running_emulator


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.emulator", *args], capture_output=True, text=True, timeout=60
    )


def test_help_lists_the_documented_options() -> None:
    result = _run("--help")
    assert result.returncode == 0
    for option in (
        "--qps",
        "--latency-ms",
        "--download-timeout",
        "--oss-root",
        "--rules",
        "--key",
        "--fault-reset",
        "--fault-gateway-5xx",
        "--seed",
    ):
        assert option in result.stdout
    assert "emulator-test-secret" not in result.stdout


def test_sample_images_help_works() -> None:
    result = _run("sample-images", "--help")
    assert result.returncode == 0 and "--port" in result.stdout


@pytest.mark.parametrize("args", [["--key", "just-an-id"], ["--fault-500", "1.5"]])
def test_bad_options_exit_with_a_usage_error(args: list[str]) -> None:
    result = _run(*args)
    assert result.returncode == 2
    assert "emulator-test-secret" not in result.stderr


def test_a_server_that_fails_to_start_raises_with_its_stderr() -> None:
    with pytest.raises(ServerStartError, match="--rules"), running_emulator(rules="/nonexistent"):
        pass


def test_keyword_options_become_flags() -> None:
    assert emulator_args({"fault_405": 0.5, "keys": ["a:b", "c:d"], "seed": None}) == [
        "--fault-405",
        "0.5",
        "--key",
        "a:b",
        "--key",
        "c:d",
    ]
