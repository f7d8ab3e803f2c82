from __future__ import annotations

import pytest

from worker.settings import (
    DEFAULTS,
    ConfigError,
    load_credentials,
    load_settings,
    mask_url,
    normalize_database_url,
    resolve_endpoint,
)


def test_defaults_are_the_documented_ones() -> None:
    s = load_settings({})
    assert s.database_url == "sqlite:///imgmod.db"
    assert s.broker_url == "redis://127.0.0.1:6379/0"
    assert s.limiter_url == s.broker_url
    assert s.endpoint == "https://green-cip.ap-southeast-1.aliyuncs.com"
    assert s.qps == 100 and s.service == "baselineCheck_global"
    assert s.info_type == "customImage,textInImage"  # Ext data unless told otherwise


def test_every_default_is_documented_in_readme() -> None:
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for name in DEFAULTS:
        assert name in readme, name


@pytest.mark.parametrize(
    ("region", "vpc", "host"),
    [
        ("ap-southeast-1", False, "green-cip.ap-southeast-1.aliyuncs.com"),
        ("ap-southeast-1", True, "green-cip-vpc.ap-southeast-1.aliyuncs.com"),
        ("eu-west-1", False, "green-cip.eu-west-1.aliyuncs.com"),
        ("us-east-1", True, "green-cip-vpc.us-east-1.aliyuncs.com"),
        ("us-west-1", False, "green-cip.us-west-1.aliyuncs.com"),
        ("eu-central-1", True, "green-cip-vpc.eu-central-1.aliyuncs.com"),
    ],
)
def test_region_picks_the_vendor_endpoint(region: str, vpc: bool, host: str) -> None:
    assert resolve_endpoint(region, vpc, "") == f"https://{host}"


@pytest.mark.parametrize("region", ["eu-west-1", "us-west-1"])
def test_vpc_in_a_region_without_one_is_a_clear_error(region: str) -> None:
    with pytest.raises(ConfigError, match="no VPC endpoint"):
        load_settings({"IMGMOD_REGION": region, "IMGMOD_VPC": "1"})


def test_unknown_region_names_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="ap-southeast-1"):
        load_settings({"IMGMOD_REGION": "cn-nowhere"})


def test_endpoint_overrides_region_and_needs_a_scheme() -> None:
    assert load_settings({"IMGMOD_ENDPOINT": "http://127.0.0.1:8080/"}).endpoint == (
        "http://127.0.0.1:8080"
    )
    with pytest.raises(ConfigError, match="scheme"):
        load_settings({"IMGMOD_ENDPOINT": "127.0.0.1:8080"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("IMGMOD_QPS", "fast"),
        ("IMGMOD_QPS", "0"),
        ("IMGMOD_SERVICE", "nope"),
        ("IMGMOD_INFO_TYPE", "customImage,faces"),
        ("IMGMOD_VPC", "maybe"),
        ("IMGMOD_WORKER_CONCURRENCY", "0"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value})


def test_plain_postgres_urls_work() -> None:
    assert normalize_database_url("postgres://u@h/db") == "postgresql://u@h/db"
    assert normalize_database_url("postgresql://u@h/db") == "postgresql://u@h/db"


def test_missing_credentials_name_both_variables() -> None:
    with pytest.raises(ConfigError) as info:
        load_credentials({})
    assert "ALIBABA_CLOUD_ACCESS_KEY_ID" in str(info.value)
    assert "ALIBABA_CLOUD_ACCESS_KEY_SECRET" in str(info.value)


def test_credentials_never_show_the_secret() -> None:
    creds = load_credentials(
        {
            "ALIBABA_CLOUD_ACCESS_KEY_ID": "id-1",
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "very-secret-value",
            "ALIBABA_CLOUD_SECURITY_TOKEN": "sts-token-value",
        }
    )
    for text in (repr(creds), str(creds)):
        assert "very-secret-value" not in text and "sts-token-value" not in text
        assert "id-1" in text


def test_metrics_are_off_and_on_loopback_by_default() -> None:
    s = load_settings({})
    assert (s.metrics_port, s.metrics_host, s.log_format) == (0, "127.0.0.1", "text")
    s = load_settings({"IMGMOD_METRICS_PORT": "9464", "IMGMOD_METRICS_HOST": "0.0.0.0"})
    assert (s.metrics_port, s.metrics_host) == (9464, "0.0.0.0")


@pytest.mark.parametrize("port", ["-1", "65536", "http"])
def test_a_bad_metrics_port_names_the_variable(port: str) -> None:
    with pytest.raises(ConfigError, match="IMGMOD_METRICS_PORT"):
        load_settings({"IMGMOD_METRICS_PORT": port})


def test_log_format_is_text_or_json() -> None:
    assert load_settings({"IMGMOD_LOG_FORMAT": "JSON"}).log_format == "json"
    with pytest.raises(ConfigError, match="IMGMOD_LOG_FORMAT"):
        load_settings({"IMGMOD_LOG_FORMAT": "xml"})


# --- the endpoint: https, or plain http on loopback / by explicit opt-in ------------------------


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://green-cip.ap-southeast-1.aliyuncs.com",
        "http://10.1.2.3:8080",
        "http://emulator:8080",
        "http://127.0.0.1.nip.io:8080",
    ],
)
def test_plain_http_off_loopback_is_refused_unless_allowed(endpoint: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"IMGMOD_ENDPOINT": endpoint})
    assert "IMGMOD_ENDPOINT" in str(info.value) and "IMGMOD_ALLOW_HTTP=1" in str(info.value)
    allowed = load_settings({"IMGMOD_ENDPOINT": endpoint, "IMGMOD_ALLOW_HTTP": "1"})
    assert allowed.endpoint == endpoint and allowed.allow_http is True


@pytest.mark.parametrize(
    "endpoint",
    ["http://127.0.0.1:8080", "http://127.9.9.9:1", "http://localhost:8080", "http://[::1]:8080"],
)
def test_plain_http_on_loopback_and_https_anywhere_are_accepted(endpoint: str) -> None:
    assert load_settings({"IMGMOD_ENDPOINT": endpoint}).endpoint == endpoint
    assert load_settings({"IMGMOD_ENDPOINT": "https://gw.example.com"}).allow_http is False


def test_an_endpoint_carrying_a_password_is_refused_without_showing_it() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"IMGMOD_ENDPOINT": "https://user:hunter2pw@gw.example.com"})
    assert "hunter2pw" not in str(info.value) and "user:***@" in str(info.value)


# --- secrets: masked in reprs, refused when they cannot travel in a header ----------------------


def test_settings_repr_masks_the_passwords_of_every_url() -> None:
    settings = load_settings(
        {
            "IMGMOD_DATABASE_URL": "postgresql://imgmod:dbpass-1@db:5432/imgmod",
            "IMGMOD_BROKER_URL": "redis://:brokerpass-2@redis:6379/0",
            "IMGMOD_LIMITER_URL": "rediss://limiter:limiterpass-3@redis:6380/1?password=qp-4",
        }
    )
    for text in (repr(settings), str(settings), f"{settings}"):
        for secret in ("dbpass-1", "brokerpass-2", "limiterpass-3", "qp-4"):
            assert secret not in text
        assert "postgresql://imgmod:***@db:5432/imgmod" in text
        assert "redis://:***@redis:6379/0" in text
    assert settings.database_url == "postgresql://imgmod:dbpass-1@db:5432/imgmod"  # value intact


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("sqlite:///imgmod.db", "sqlite:///imgmod.db"),
        ("postgresql://imgmod@db/imgmod", "postgresql://imgmod@db/imgmod"),
        ("redis://u:p@ss:w@host/0", "redis://u:***@host/0"),
        ("postgresql://db/x?user=a&password=b&sslmode=require", "postgresql://db/x?user=a&password=***&sslmode=require"),
        ("not a url", "not a url"),
    ],
)  # fmt: skip
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


BASE_CREDENTIALS = {
    "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI5tExampleKey",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "Example-Secret-Value",
}


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("ALIBABA_CLOUD_SECURITY_TOKEN", "CAIS-tok-1\nX-Evil: 1", "a line break at position 10"),
        ("ALIBABA_CLOUD_SECURITY_TOKEN", "CAIS-token\r\npart2", "a line break at position 10"),
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "Example Secret", "a space at position 7"),
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAI\x1b[31mKey", "a control character (U+001B)"),
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "Exämple-Secret", "a non-ASCII character (U+00E4)"),
    ],
)  # fmt: skip
def test_credentials_a_header_cannot_carry_are_a_config_error_naming_only_the_position(
    name: str, value: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_credentials({**BASE_CREDENTIALS, name: value})
    message = str(info.value)
    assert name in message and problem in message
    assert value.split()[0][:6] not in message.replace(name, "")


def test_a_token_with_only_surrounding_whitespace_is_accepted_trimmed() -> None:
    creds = load_credentials({**BASE_CREDENTIALS, "ALIBABA_CLOUD_SECURITY_TOKEN": " CAIS-tok\n"})
    assert creds.security_token == "CAIS-tok"


def test_the_call_deadline_has_a_default_and_must_be_positive() -> None:
    assert load_settings({}).call_deadline == 15.0
    assert load_settings({"IMGMOD_CALL_DEADLINE": "4.5"}).call_deadline == 4.5
    with pytest.raises(ConfigError, match="IMGMOD_CALL_DEADLINE"):
        load_settings({"IMGMOD_CALL_DEADLINE": "0"})


def test_ids_per_message_defaults_to_sixteen_and_names_the_variable_when_bad() -> None:
    assert load_settings({}).batch.ids_per_message == 16
    assert load_settings({"IMGMOD_IDS_PER_MESSAGE": "1"}).batch.ids_per_message == 1
    for bad in ("0", "-2", "x", "101", "2.5"):
        with pytest.raises(ConfigError, match="IMGMOD_IDS_PER_MESSAGE"):
            load_settings({"IMGMOD_IDS_PER_MESSAGE": bad})
