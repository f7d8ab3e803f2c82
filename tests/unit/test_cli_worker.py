"""`imgmod worker`: what the command line resolves (-c, --log-format) reaches the Celery
process's own settings, through its environment, and the CLI's own environment is left alone."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from click.testing import CliRunner

from worker.cli import main
from worker.cli.admin import worker_launch
from worker.settings import load_settings


def test_the_concurrency_given_reaches_the_settings_the_worker_app_is_built_from() -> None:
    settings = replace(load_settings({}), worker_concurrency=3, log_format="json")
    argv, carried = worker_launch(settings)
    assert argv[argv.index("--concurrency") + 1] == "3"
    child = load_settings({"IMGMOD_WORKER_CONCURRENCY": "192", **carried})
    assert child.worker_concurrency == 3 and child.log_format == "json"


def test_without_options_the_worker_gets_the_configured_values() -> None:
    settings = load_settings({"IMGMOD_WORKER_CONCURRENCY": "24", "IMGMOD_LOG_LEVEL": "WARNING"})
    argv, carried = worker_launch(settings)
    assert argv[argv.index("--concurrency") + 1] == "24"
    assert argv[argv.index("--loglevel") + 1] == "WARNING"
    assert load_settings(carried).worker_concurrency == 24


def test_log_format_never_writes_the_cli_processs_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("IMGMOD_LOG_FORMAT", raising=False)
    result = CliRunner().invoke(main, ["--log-format", "json", "worker", "--help"])
    assert result.exit_code == 0, result.output
    assert "IMGMOD_LOG_FORMAT" not in os.environ


def test_a_concurrency_below_one_is_refused_before_anything_starts() -> None:
    result = CliRunner().invoke(main, ["worker", "-c", "0"])
    assert result.exit_code == 2 and "--concurrency" in result.output
