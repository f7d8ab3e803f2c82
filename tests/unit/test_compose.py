"""No Docker engine runs here: the compose file is checked by reading it."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_production_services_with_healthchecks() -> None:
    services = _compose()["services"]
    assert {"redis", "postgres", "migrate", "worker"} <= set(services)
    assert "--appendonly" in services["redis"]["command"]
    assert "healthcheck" in services["redis"] and "healthcheck" in services["postgres"]
    deps = services["worker"]["depends_on"]
    assert deps["migrate"]["condition"] == "service_completed_successfully"
    assert deps["postgres"]["condition"] == "service_healthy"


def test_every_imgmod_command_in_compose_exists() -> None:
    from click.testing import CliRunner

    from worker.cli import main

    for name, service in _compose()["services"].items():
        if service.get("build") != ".":
            continue
        argv = list(service["command"])
        result = CliRunner().invoke(
            main, [*argv[:2], "--help"] if argv[0] == "db" else [argv[0], "--help"]
        )
        assert result.exit_code == 0, f"{name}: imgmod {argv[0]}: {result.output}"


def test_files_referenced_by_compose_and_dockerfile_exist() -> None:
    assert (ROOT / "Dockerfile").exists() and (ROOT / ".env.example").exists()
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), src
