"""No Docker engine runs here: the compose file, Dockerfile and .env.example are checked by reading.

Each check pins something `docker compose up` would only reveal at deploy time: a command the
CLI doesn't have, a file the image build can't copy, a variable nobody reads.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).parents[2]
CREDENTIALS = {
    "ALIBABA_CLOUD_ACCESS_KEY_ID",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
    "ALIBABA_CLOUD_SECURITY_TOKEN",
}
# Variables of the compose file itself (not imgmod settings), each documented in .env.example.
COMPOSE_ONLY = {"POSTGRES_PASSWORD"}
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _services() -> dict[str, Any]:
    return _compose()["services"]


def _env_example_keys() -> list[str]:
    keys = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keys.append(line.split("=", 1)[0].strip())
    return keys


def _own_image_services() -> dict[str, Any]:
    return {name: s for name, s in _services().items() if s.get("build") == "."}


def test_compose_has_the_production_services_with_healthchecks() -> None:
    services = _services()
    assert {"redis", "postgres", "migrate", "worker"} <= set(services)
    assert "--appendonly" in services["redis"]["command"]
    assert "healthcheck" in services["redis"] and "healthcheck" in services["postgres"]
    deps = services["worker"]["depends_on"]
    assert deps["migrate"]["condition"] == "service_completed_successfully"
    assert deps["postgres"]["condition"] == "service_healthy"
    assert deps["redis"]["condition"] == "service_healthy"
    assert services["migrate"]["command"] == ["db", "upgrade"]


def test_postgres_and_redis_keep_their_data_in_volumes() -> None:
    compose = _compose()
    for name in ("redis", "postgres"):
        (volume,) = compose["services"][name]["volumes"]
        assert volume.split(":", 1)[0] in compose["volumes"], name


def test_the_worker_can_be_scaled() -> None:
    worker = _services()["worker"]
    assert "container_name" not in worker  # --scale needs generated names
    assert "ports" not in worker  # and no host port two replicas would fight over
    assert worker["command"][0] == "worker"


def test_no_service_publishes_a_fixed_host_port() -> None:
    for name, service in _services().items():
        for port in service.get("ports", []):
            parts = str(port).split(":")
            assert len(parts) == 3 and parts[0] == "127.0.0.1" and parts[1] == "", (name, port)


def test_optional_services_sit_behind_profiles() -> None:
    services = _services()
    assert services["emulator"]["profiles"] == ["emulator"]
    assert services["images"]["profiles"] == ["emulator"]
    assert services["flower"]["profiles"] == ["flower"]
    for name in ("redis", "postgres", "migrate", "worker"):
        assert "profiles" not in services[name], name


def test_flower_reads_the_workers_broker() -> None:
    services = _compose()
    broker = services["x-imgmod-env"]["IMGMOD_BROKER_URL"]
    flower = services["services"]["flower"]
    assert flower["image"].startswith("mher/flower")
    assert f"--broker={broker}" in flower["command"]


def test_depends_on_names_real_services_with_healthchecks_where_required() -> None:
    services = _services()
    for name, service in services.items():
        for dep, spec in service.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health"


@pytest.mark.parametrize("name", sorted(_own_image_services()))
def test_every_imgmod_command_in_compose_exists_with_its_options(name: str) -> None:
    from click.testing import CliRunner

    from worker.cli import main

    argv = [str(a) for a in _own_image_services()[name]["command"]]
    # --help is eager: click parses every option given before it, then prints help.
    result = CliRunner().invoke(main, [*argv, "--help"])
    assert result.exit_code == 0, f"{name}: imgmod {' '.join(argv)}: {result.output}"
    assert "Usage:" in result.output


def test_the_run_recipe_in_the_compose_header_is_a_real_command() -> None:
    from click.testing import CliRunner

    from worker.cli import main

    for command in ("run", "doctor", "worker"):
        assert CliRunner().invoke(main, [command, "--help"]).exit_code == 0, command


def test_every_variable_compose_passes_is_a_setting_or_documented() -> None:
    from worker.settings import DEFAULTS

    compose = _compose()
    text = (ROOT / "docker-compose.yml").read_text()
    env_keys = set(compose["x-imgmod-env"])
    for key in env_keys:
        assert key in DEFAULTS or key in CREDENTIALS, f"{key} is not an imgmod setting"
    documented = set(_env_example_keys())
    for var in set(INTERPOLATION.findall(text)):
        assert var in DEFAULTS or var in CREDENTIALS or var in COMPOSE_ONLY, var
        assert var in documented, f"${{{var}}} is used by compose but missing from .env.example"
    readme = (ROOT / "README.md").read_text()
    for key in env_keys - CREDENTIALS:
        assert key in readme, f"{key} is not documented in README.md"


def test_every_env_example_key_is_used_by_compose() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    keys = _env_example_keys()
    assert len(keys) == len(set(keys)), "a key is listed twice"
    for key in keys:
        assert "${" + key in text, f"{key} in .env.example is never read by docker-compose.yml"


def test_env_example_holds_no_credentials() -> None:
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.startswith(("ALIBABA_CLOUD_ACCESS_KEY_SECRET=", "ALIBABA_CLOUD_SECURITY_TOKEN=")):
            assert line.split("=", 1)[1] == "", line


def test_bind_mounts_point_into_the_project_or_the_inputs_directory() -> None:
    for name, service in _services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                # ./data is the operator's inputs directory (see the compose header)
                assert source == "./data" or (ROOT / source).exists(), (name, source)


def test_files_referenced_by_compose_and_dockerfile_exist() -> None:
    assert (ROOT / "Dockerfile").exists() and (ROOT / ".env.example").exists()
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), src


def test_image_ships_the_migrations_and_runs_as_a_user() -> None:
    lines = [x.strip() for x in (ROOT / "Dockerfile").read_text().splitlines()]
    copies = " ".join(x for x in lines if x.startswith("COPY "))
    assert "migrations" in copies and "worker" in copies and "pyproject.toml" in copies
    assert (ROOT / "migrations" / "env.py").exists()
    # installed in place, so store.MIGRATIONS_DIR (beside the package) is /app/migrations
    assert any(x.startswith("RUN pip install -e .") for x in lines)
    users = [x.split()[1] for x in lines if x.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert 'ENTRYPOINT ["imgmod"]' in lines
