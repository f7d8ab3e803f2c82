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
COMPOSE_ONLY = {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "REDIS_MAXMEMORY", "FLOWER_BASIC_AUTH"}
# Secrets the operator must choose: no default, compose refuses to start without them.
REQUIRED_SECRETS = {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "FLOWER_BASIC_AUTH"}
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
# ${VAR...} with whatever follows the name up to the closing brace
USES = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}")
PINNED_IMAGE = re.compile(r"^[a-z0-9./_-]+:\d+(\.\d+)+(-[a-z0-9.]+)*(@sha256:[0-9a-f]{64})?$")
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


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
        if line.startswith("COPY ") and "--from=" not in line:  # --from copies from a stage
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), src


def _dockerfile_lines() -> list[str]:
    return [x.strip() for x in (ROOT / "Dockerfile").read_text().splitlines()]


def test_image_ships_the_migrations_and_runs_as_a_user() -> None:
    lines = _dockerfile_lines()
    copies = " ".join(x for x in lines if x.startswith("COPY "))
    assert "migrations" in copies and "worker" in copies and "pyproject.toml" in copies
    assert (ROOT / "migrations" / "env.py").exists()
    # Changed with the wheel install (the issue): the image installs the wheel, which carries the
    # migrations (tests/integration/test_wheel_install.py), instead of an editable checkout.
    runs = " ".join(x for x in lines if x.startswith(("RUN ", "&&")))
    assert "pip wheel" in runs and "pip install -e" not in runs
    assert any(
        x.startswith("RUN pip install -c /tmp/constraints.txt /tmp/dist/imgmod-") for x in lines
    )
    users = [x.split()[1] for x in lines if x.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert 'ENTRYPOINT ["imgmod"]' in lines


def test_every_pip_install_in_the_image_uses_the_lock() -> None:
    text = (ROOT / "Dockerfile").read_text()
    commands = re.findall(r"pip (?:install|wheel)[^\\&\n]*", text)
    assert commands
    for command in commands:
        assert "-c " in command or "--no-deps" in command, command
    assert "--no-build-isolation" in text  # the locked setuptools builds the wheel


def test_the_base_image_is_pinned_by_version_and_digest() -> None:
    lines = _dockerfile_lines()
    (arg,) = [x for x in lines if x.startswith("ARG PYTHON_IMAGE=")]
    image = arg.split("=", 1)[1]
    assert PINNED_IMAGE.match(image) and DIGEST.search(image), image
    froms = [x for x in lines if x.startswith("FROM ")]
    assert froms and all(x.split()[1] == "${PYTHON_IMAGE}" for x in froms), froms


def test_every_compose_image_is_pinned_to_an_exact_version() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for name, service in _services().items():
        if "image" not in service:
            assert service.get("build") == ".", name
            continue
        image = service["image"]
        assert PINNED_IMAGE.match(image), f"{name}: {image} is not an exact version"
        if not DIGEST.search(image):
            # only with a visible note saying the digest is still to be pinned, and why
            assert "UNPINNED DIGEST" in text and image.split(":")[0] in text, name
    for name in ("redis", "postgres"):  # the stateful core: digest required
        assert DIGEST.search(_services()[name]["image"]), name


def test_the_lock_covers_every_pinned_dependency_of_pyproject() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    for spec in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        name, version = spec.split(";")[0].strip().split("==")  # "; python_version < ..." apart
        name = re.sub(r"\[.*\]", "", name)
        assert pins.get(re.sub(r"[-_.]+", "-", name).lower()) == version, spec
    assert "imgmod" not in pins and "setuptools" in pins


def _uses(var: str) -> list[str]:
    """What follows ${VAR in every use: "" (plain), ":-default", ":?message", ..."""
    return [
        rest
        for name, rest in USES.findall((ROOT / "docker-compose.yml").read_text())
        if name == var
    ]


@pytest.mark.parametrize("var", sorted(REQUIRED_SECRETS))
def test_secrets_have_no_default_and_are_required(var: str) -> None:
    uses = _uses(var)
    assert uses, f"{var} is never used"
    for rest in uses:
        assert rest.startswith(":?"), f"${{{var}{rest}}}: must be required (:?), with no default"


def test_env_example_leaves_every_password_empty() -> None:
    values = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    for var in REQUIRED_SECRETS:
        assert values.get(var) == "", f"{var} must be listed, and empty, in .env.example"


def test_postgres_and_the_database_url_use_the_required_password() -> None:
    compose = _compose()
    url = compose["x-imgmod-env"]["IMGMOD_DATABASE_URL"]
    assert url.startswith("postgresql://imgmod:${POSTGRES_PASSWORD:?")
    assert compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith(
        "${POSTGRES_PASSWORD:?"
    )


def test_redis_requires_a_password_and_every_client_sends_it() -> None:
    compose = _compose()
    redis = compose["services"]["redis"]
    command = [str(x) for x in redis["command"]]
    password = command[command.index("--requirepass") + 1]
    assert password.startswith("${REDIS_PASSWORD:?")
    broker = compose["x-imgmod-env"]["IMGMOD_BROKER_URL"]
    assert broker.startswith("redis://:${REDIS_PASSWORD:?") and broker.endswith("@redis:6379/0")
    # the healthcheck authenticates (a NOAUTH error must not count as healthy)
    test = " ".join(redis["healthcheck"]["test"])
    assert "REDISCLI_AUTH" in test and "PONG" in test
    assert redis["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")


def test_redis_never_evicts_queued_messages() -> None:
    command = [str(x) for x in _services()["redis"]["command"]]
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert command[command.index("--maxmemory") + 1]  # a cap: writes fail instead of OOM-kill


def test_flower_requires_basic_auth() -> None:
    flower = _services()["flower"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert not any("--basic-auth" in str(x) for x in flower["command"])  # not on the command line


def test_migrate_gets_no_credentials_it_does_not_need() -> None:
    compose = _compose()
    migrate = compose["services"]["migrate"]["environment"]
    assert not set(migrate) & CREDENTIALS
    assert "IMGMOD_BROKER_URL" not in migrate  # db upgrade talks to the database only
    assert migrate["IMGMOD_DATABASE_URL"] == compose["x-imgmod-env"]["IMGMOD_DATABASE_URL"]
    assert set(compose["services"]["worker"]["environment"]) >= CREDENTIALS
