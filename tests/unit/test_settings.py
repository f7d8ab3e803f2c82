from __future__ import annotations

import pytest

from worker.settings import (
    DEFAULTS,
    ConfigError,
    load_credentials,
    load_settings,
    normalize_database_url,
    resolve_endpoint,
)


def test_defaults_are_the_documented_ones() -> None:
    s = load_settings({})
    assert s.database_url == "sqlite:///imgmod.db"
    assert s.broker_url == "redis://127.0.0.1:6379/0"
    assert s.limiter_url == s.broker_url
    assert s.endpoint == "https://green-cip.ap-southeast-1.aliyuncs.com"
    assert s.qps == 100 and s.service == "baselineCheck_global" and s.info_type == ""


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
