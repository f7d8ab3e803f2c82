"""`imgmod doctor` against real services: the emulator, Redis, SQLite and PostgreSQL.

Every test ends by checking the emulator billed nothing: the endpoint probe must prove the
credentials without a Code 200.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import run_imgmod
from worker import store
from worker.doctor import (
    Check,
    check_broker,
    check_database,
    check_endpoint,
    check_limiter,
    check_settings,
    mask_key_id,
    probe_fields,
    render,
    run_checks,
)
from worker.emulator import TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET
from worker.processes import free_port, running_emulator
from worker.settings import Credentials, load_settings

pytestmark = pytest.mark.service

WRONG_SECRET = "not-the-emulator-secret"  # noqa: S105 - a made-up value the tests look for


@pytest.fixture(scope="module")
def emulator() -> Iterator[Any]:
    with running_emulator(qps=100) as emu:
        yield emu


@pytest.fixture
def env(emulator: Any, database_url: str, redis_url: str) -> Iterator[dict[str, str]]:
    emulator.reset()
    store.upgrade(database_url)
    yield {
        "IMGMOD_DATABASE_URL": database_url,
        "IMGMOD_BROKER_URL": redis_url,
        "IMGMOD_ENDPOINT": emulator.url,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": TEST_ACCESS_KEY_ID,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": TEST_ACCESS_KEY_SECRET,
    }
    assert emulator.stats()["billed"] == 0


def _by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def test_every_check_passes_on_a_ready_machine(env: dict[str, str], emulator: Any) -> None:
    checks = run_checks(env)
    assert [c.name for c in checks] == [
        "settings",
        "credentials",
        "database",
        "broker",
        "limiter",
        "endpoint",
    ]
    assert all(c.ok for c in checks), render(checks)
    assert "emul****key" in _by_name(checks)["credentials"].detail
    assert "Code 400" in _by_name(checks)["endpoint"].detail
    assert emulator.stats()["by_code"] == {"400": 1}


def test_the_probe_never_carries_an_image() -> None:
    fields = probe_fields("baselineCheck_global")
    assert "imageUrl" not in fields["ServiceParameters"]
    assert "oss" not in fields["ServiceParameters"].lower()


def test_a_wrong_secret_fails_the_endpoint_check_without_printing_it(
    env: dict[str, str], emulator: Any
) -> None:
    checks = run_checks({**env, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": WRONG_SECRET})
    endpoint = _by_name(checks)["endpoint"]
    assert not endpoint.ok
    assert "SignatureDoesNotMatch" in endpoint.detail
    assert "ALIBABA_CLOUD_ACCESS_KEY_SECRET" in endpoint.fix
    assert WRONG_SECRET not in render(checks)


def test_an_unknown_key_id_fails_the_endpoint_check(env: dict[str, str]) -> None:
    checks = run_checks({**env, "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI-nobody-knows"})
    endpoint = _by_name(checks)["endpoint"]
    assert not endpoint.ok and "InvalidAccessKeyId.NotFound" in endpoint.detail
    assert "LTAI****ows" in _by_name(checks)["credentials"].detail


def test_an_account_without_permission_fails_with_the_vendors_advice(env: dict[str, str]) -> None:
    with running_emulator(key=["LTAI-noperm-key:noperm-secret-1:noperm"]) as emu:
        settings = load_settings({**env, "IMGMOD_ENDPOINT": emu.url})
        check = check_endpoint(settings, Credentials("LTAI-noperm-key", "noperm-secret-1"))
        assert emu.stats()["billed"] == 0
    assert not check.ok and "408" in check.detail
    assert "AliyunYundunGreenWebFullAccess" in check.fix


def test_an_unreachable_endpoint_fails_with_a_fix(env: dict[str, str]) -> None:
    settings = load_settings({**env, "IMGMOD_ENDPOINT": f"http://127.0.0.1:{free_port()}"})
    check = check_endpoint(settings, Credentials(TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET))
    assert not check.ok and "no answer" in check.detail
    assert "IMGMOD_ENDPOINT" in check.fix


def test_an_unmigrated_database_fails_with_the_upgrade_command(
    env: dict[str, str], tmp_path
) -> None:
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    engine = store.make_engine(empty)
    with engine.connect():
        pass  # the file exists, without tables
    engine.dispose()
    check = check_database(load_settings({**env, "IMGMOD_DATABASE_URL": empty}))
    assert not check.ok and "no imgmod tables" in check.detail
    assert "imgmod db upgrade" in check.fix


def test_a_missing_sqlite_file_is_not_created_by_the_check(env: dict[str, str], tmp_path) -> None:
    path = tmp_path / "absent.db"
    check = check_database(load_settings({**env, "IMGMOD_DATABASE_URL": f"sqlite:///{path}"}))
    assert not check.ok and "does not exist" in check.detail
    assert not path.exists()


def test_an_unreachable_postgres_fails_without_showing_its_password(env: dict[str, str]) -> None:
    url = f"postgresql://imgmod:hunter2pass@127.0.0.1:{free_port()}/imgmod"
    check = check_database(load_settings({**env, "IMGMOD_DATABASE_URL": url}))
    assert not check.ok and "cannot connect" in check.detail
    assert "hunter2pass" not in check.detail


def test_unreachable_broker_and_limiter_fail_their_checks(env: dict[str, str]) -> None:
    dead = f"redis://:hunter2pass@127.0.0.1:{free_port()}/0"
    settings = load_settings({**env, "IMGMOD_BROKER_URL": dead})
    broker, limiter = check_broker(settings), check_limiter(settings)
    assert not broker.ok and "IMGMOD_BROKER_URL" in broker.fix
    assert not limiter.ok and "IMGMOD_LIMITER_URL" in limiter.fix
    assert "hunter2pass" not in broker.detail + limiter.detail


def test_bad_settings_stop_the_checks_that_need_them(env: dict[str, str]) -> None:
    checks = run_checks({**env, "IMGMOD_QPS": "fast"})
    assert [(c.name, c.ok) for c in checks] == [("settings", False), ("credentials", True)]
    assert "IMGMOD_QPS" in checks[0].detail


def test_key_ids_are_masked() -> None:
    assert mask_key_id("emulator-test-key") == "emul****key"
    assert mask_key_id("LTAI5tABCDEFGH") == "LTAI****FGH"
    assert mask_key_id("short") == "****"


def test_render_marks_each_check_and_gives_the_fix_of_failures() -> None:
    text = render([Check("a", True, "fine"), Check("b", False, "broken", "do this")])
    assert text.splitlines() == ["✓ a: fine", "✗ b: broken", "    fix: do this"]
    assert render([Check("b", False, "broken")], unicode=False) == "FAIL b: broken"


def _doctor(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_imgmod({**env, "PYTHONIOENCODING": "utf-8"}, "doctor", timeout=120)


def test_doctor_command_exits_0_when_all_pass_and_1_otherwise(env: dict[str, str]) -> None:
    good = _doctor(env)
    assert good.returncode == 0, good.stdout + good.stderr
    assert len(good.stdout.splitlines()) == 6
    assert all(line.startswith("✓ ") for line in good.stdout.splitlines())

    bad = _doctor({**env, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": WRONG_SECRET})
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "✗ endpoint:" in bad.stdout and "    fix: " in bad.stdout
    assert WRONG_SECRET not in bad.stdout + bad.stderr
    assert TEST_ACCESS_KEY_SECRET not in good.stdout + good.stderr


# ---------------------------------------------------------------- what the probe costs


def test_the_endpoint_check_says_what_is_known_about_billing_not_never_billed(
    env: dict[str, str], emulator: Any
) -> None:
    endpoint = _by_name(run_checks(env))["endpoint"]
    assert endpoint.ok
    assert "answers Code 400" in endpoint.detail
    assert "the vendor bills Code-200 answers" in endpoint.detail
    assert "not billed" not in endpoint.detail and "never billed" not in endpoint.detail
    assert emulator.stats()["billed"] == 0  # and the probe still carries no image


# ---------------------------------------------------------------- warnings about settings


@pytest.mark.parametrize(
    ("settings_env", "region"),
    [
        ({"IMGMOD_REGION": "eu-west-1"}, "eu-west-1"),
        ({"IMGMOD_REGION": "eu-central-1", "IMGMOD_VPC": "1"}, "eu-central-1"),
        ({"IMGMOD_ENDPOINT": "https://green-cip.us-west-1.aliyuncs.com"}, "us-west-1"),
    ],
)
def test_a_region_the_vendor_lists_no_services_for_gets_a_warning(
    settings_env: dict[str, str], region: str
) -> None:
    check, _ = check_settings(settings_env)
    assert check.ok  # it loads; it is probably not what was meant
    (warning,) = check.warnings
    assert region in warning and "ap-southeast-1" in warning and "us-east-1" in warning
    assert f"    warning: {warning}" in render([check]).splitlines()


@pytest.mark.parametrize(
    "settings_env",
    [
        {"IMGMOD_REGION": "ap-southeast-1"},
        {"IMGMOD_REGION": "us-east-1", "IMGMOD_VPC": "1"},
        {"IMGMOD_ENDPOINT": "http://127.0.0.1:8080"},  # the emulator: the table says nothing
    ],
)
def test_documented_regions_and_local_endpoints_get_no_warning(
    settings_env: dict[str, str],
) -> None:
    check, _ = check_settings(settings_env)
    assert check.ok and check.warnings == ()


def test_a_plain_http_endpoint_off_loopback_fails_the_settings_check() -> None:
    checks = run_checks({"IMGMOD_ENDPOINT": "http://green-cip.ap-southeast-1.aliyuncs.com"})
    settings = _by_name(checks)["settings"]
    assert not settings.ok
    assert "IMGMOD_ALLOW_HTTP" in settings.detail and "https://" in settings.detail
    assert "endpoint" not in _by_name(checks)  # nothing was sent over it


def test_a_plain_http_endpoint_accepted_by_opt_in_still_gets_a_warning() -> None:
    check, settings = check_settings(
        {"IMGMOD_ENDPOINT": "http://emulator:8080", "IMGMOD_ALLOW_HTTP": "1"}
    )
    assert check.ok and settings is not None and settings.allow_http
    assert any("clear text" in w for w in check.warnings)


def test_a_call_deadline_not_well_under_the_lease_gets_a_warning() -> None:
    check, _ = check_settings({"IMGMOD_CALL_DEADLINE": "20", "IMGMOD_LEASE_SECONDS": "30"})
    assert any("IMGMOD_CALL_DEADLINE" in w and "IMGMOD_LEASE_SECONDS" in w for w in check.warnings)
    check, _ = check_settings({"IMGMOD_CALL_DEADLINE": "15", "IMGMOD_LEASE_SECONDS": "30"})
    assert check.warnings == ()


def test_a_variable_imgmod_no_longer_reads_is_named_not_silently_ignored() -> None:
    check, settings = check_settings({"IMGMOD_POOL_SIZE": "256"})
    assert check.ok and settings is not None and settings.obsolete == ("IMGMOD_POOL_SIZE",)
    assert any("IMGMOD_POOL_SIZE is set but no longer read" in w for w in check.warnings)
    check, _ = check_settings({})
    assert not any("no longer read" in w for w in check.warnings)


def test_an_endpoint_that_redirects_fails_the_check_and_the_redirect_is_not_followed(
    env: dict[str, str], emulator: Any
) -> None:
    import http.server
    import threading

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(302)
            self.send_header("Location", emulator.url + "/")  # a host that would answer
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        check = check_endpoint(
            load_settings({**env, "IMGMOD_ENDPOINT": url}),
            Credentials(TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET),
        )
    finally:
        server.shutdown()
        server.server_close()
    assert not check.ok and "redirect" in check.detail
    assert "IMGMOD_ENDPOINT" in check.fix
    assert emulator.stats()["calls"] == 0  # the emulator behind the Location saw nothing


# ---------------------------------------------------------------- doctor --oss

OSS_REGION = "cn-hangzhou"


@pytest.fixture
def oss_env(tmp_path: Any, sqlite_url: str, redis_url: str) -> Iterator[dict[str, str]]:
    """The emulator serving OSS: bucket ``photos`` listable, bucket ``secret`` denied."""
    root = tmp_path / "oss"
    for bucket in ("photos", "secret"):
        (root / OSS_REGION / bucket / "in").mkdir(parents=True)
        (root / OSS_REGION / bucket / "in" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with running_emulator(oss_root=root, oss_region=OSS_REGION, oss_deny_list=("secret",)) as emu:
        store.upgrade(sqlite_url)
        yield {
            "IMGMOD_DATABASE_URL": sqlite_url,
            "IMGMOD_BROKER_URL": redis_url,
            "IMGMOD_ENDPOINT": emu.url,
            "IMGMOD_OSS_ENDPOINT": emu.oss_url,
            "ALIBABA_CLOUD_ACCESS_KEY_ID": TEST_ACCESS_KEY_ID,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": TEST_ACCESS_KEY_SECRET,
        }
        assert emu.stats()["billed"] == 0


def test_doctor_oss_passes_for_a_listable_prefix_and_notes_the_service_grant(
    oss_env: dict[str, str],
) -> None:
    done = run_imgmod(
        oss_env, "doctor", "--oss", "oss://photos/in/", "--oss-region", OSS_REGION, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    oss_line = next(line for line in done.stdout.splitlines() if " oss: " in line)
    assert "oss://photos/in/" in oss_line and "listing allowed" in oss_line
    assert "note: the Content Moderation service" in done.stdout
    assert "AliyunCIPScanOSSRole" in done.stdout and "photos" in done.stdout


def test_doctor_oss_names_the_bucket_and_the_permission_when_listing_is_denied(
    oss_env: dict[str, str],
) -> None:
    done = run_imgmod(
        oss_env, "doctor", "--oss", "oss://secret/", "--oss-region", OSS_REGION, timeout=60
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    failed = [line for line in done.stdout.splitlines() if line.startswith(("✗", "FAIL"))]
    assert len(failed) == 1, done.stdout
    assert "oss://secret" in failed[0] and "oss:ListObjects" in failed[0]
    assert "'secret'" in failed[0]
    assert "AliyunCIPScanOSSRole" in done.stdout  # the note stands on a failure too
    assert TEST_ACCESS_KEY_SECRET not in done.stdout + done.stderr


def test_doctor_without_oss_lists_nothing(oss_env: dict[str, str]) -> None:
    checks = run_checks(oss_env)
    assert "oss" not in [c.name for c in checks]


def test_doctor_oss_refuses_a_malformed_prefix_in_one_line(oss_env: dict[str, str]) -> None:
    from worker.doctor_oss import run_oss_checks

    [check] = run_oss_checks(["oss://No_Such/"], OSS_REGION, oss_env)
    assert not check.ok and "oss://No_Such/" in check.detail and "bucket" in check.detail
