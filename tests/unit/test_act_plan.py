"""The pure parts of acting on decisions: the plan of act/restore, the pacer, webhook
signatures and URLs, OSS error classes, the emulator's copy-source parsing, the settings."""

from __future__ import annotations

import hashlib
import hmac

import alibabacloud_oss_v2.exceptions as oss_exc
import pytest

from worker.actions import ActionRefused, Change, Pacer, check_prefix, plan_act, plan_restore
from worker.emulator.oss_acl import is_object_extra, parse_copy_source
from worker.oss_actions import ObjectActionFailed, ObjectDenied, ObjectGone, classify
from worker.settings import ConfigError, load_settings
from worker.store.actions import DecidedItem, ObjectAction
from worker.webhook import (
    Signer,
    WebhookUrlInvalid,
    backoff,
    check_url,
    event_body,
    event_payload,
    shown_url,
    signature,
    verify,
)


def item(kind: str = "oss", key: str = "a/b.png") -> DecidedItem:
    return DecidedItem(
        item_id=7, job_id=1, kind=kind, image_url=None if kind == "oss" else "https://x/1.png",
        bucket="bkt" if kind == "oss" else None, key=key if kind == "oss" else None,
        region="ap-southeast-1", data_id=None, decision="block", decision_id=3,
        policy_name="default", policy_version="2",
    )  # fmt: skip


def recorded(action: str, state: str, current: str = "a/b.png", acl: str | None = None):
    return ObjectAction(1, 7, action, state, "bkt", "a/b.png", current, acl)


def test_an_object_already_acted_on_is_not_in_the_plan_and_a_url_is_not_an_object() -> None:
    assert plan_act(item(), recorded("freeze", "applied"), "freeze", "q/") == "unchanged"
    assert plan_act(item(), recorded("move", "applied", "q/a/b.png"), "move", "q/") == "unchanged"
    assert plan_act(item("url"), None, "freeze", "q/") == "not oss"
    assert plan_act(item(key="q/a/b.png"), None, "move", "q/") == "unchanged"  # never nested


def test_a_new_act_reads_the_acl_and_a_resumed_one_uses_what_it_remembered() -> None:
    new = plan_act(item(), None, "freeze", "q/")
    assert isinstance(new, Change) and new.acl_before is None and not new.resume
    again = plan_act(item(), recorded("freeze", "restored", acl="public-read"), "freeze", "q/")
    assert isinstance(again, Change) and again.acl_before is None  # read afresh
    resumed = plan_act(item(), recorded("freeze", "applying", acl="public-read"), "freeze", "q/")
    assert isinstance(resumed, Change) and resumed.resume and resumed.acl_before == "public-read"
    assert resumed.describe() == "freeze oss://bkt/a/b.png: ACL -> private"


def test_a_move_goes_under_the_prefix_and_a_resumed_move_keeps_its_recorded_target() -> None:
    move = plan_act(item(), None, "move", "quarantine/")
    assert isinstance(move, Change) and move.target == "quarantine/a/b.png"
    resumed = plan_act(item(), recorded("move", "applying", "old/a/b.png"), "move", "quarantine/")
    assert isinstance(resumed, Change) and resumed.target == "old/a/b.png"
    assert move.describe() == "move oss://bkt/a/b.png -> oss://bkt/quarantine/a/b.png"


def test_restore_undoes_what_the_row_says_and_nothing_else() -> None:
    assert plan_restore(item(), None) == "unchanged"
    assert plan_restore(item(), recorded("freeze", "restored")) == "unchanged"
    unfreeze = plan_restore(item(), recorded("freeze", "applied", acl="public-read"))
    assert isinstance(unfreeze, Change) and unfreeze.undo
    assert unfreeze.describe() == "unfreeze oss://bkt/a/b.png: ACL -> public-read"
    back = plan_restore(item(), recorded("move", "applied", "q/a/b.png"))
    assert isinstance(back, Change) and (back.key, back.target) == ("q/a/b.png", "a/b.png")


@pytest.mark.parametrize("prefix", ["", "/q/", "q\x00/"])
def test_a_quarantine_prefix_must_be_a_relative_key_prefix(prefix: str) -> None:
    with pytest.raises(ActionRefused, match="--prefix"):
        check_prefix(prefix)
    assert check_prefix("quarantine/") == "quarantine/"


def test_the_pacer_spaces_requests_at_the_rate() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacer = Pacer(10.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        pacer.wait()
    assert now[0] == pytest.approx(100.4) and len(slept) == 4


def test_a_signature_verifies_only_for_its_body_secret_and_a_recent_timestamp() -> None:
    secret, body = b"s" * 20, event_body({"b": 1, "a": "é"})
    headers = Signer(secret).headers(body, 1_000_000, "7-3")
    expected = hmac.new(secret, b"1000000." + body, hashlib.sha256).hexdigest()
    assert (
        headers["X-Imgmod-Signature"]
        == f"v1={expected}"
        == "v1=" + signature(secret, 1_000_000, body)
    )
    assert verify(secret, headers, body, now=1_000_100)
    assert not verify(secret, headers, body + b" ", now=1_000_100)
    assert not verify(b"t" * 20, headers, body, now=1_000_100)
    assert not verify(secret, headers, body, now=1_000_000 + 301)  # a replay, later
    assert secret.decode() not in repr(Signer(secret))
    assert body == b'{"a":"\\u00e9","b":1}'


def test_the_event_names_the_reference_and_the_decision_with_a_stable_delivery_id() -> None:
    event = event_payload("night-1", item())
    assert event["reference"] == {"oss_bucket": "bkt", "oss_object": "a/b.png",
                                  "oss_region": "ap-southeast-1"}  # fmt: skip
    assert (event["delivery"], event["decision"], event["policy_version"]) == ("7-3", "block", "2")
    assert event_payload("night-1", item("url"))["reference"] == {"image_url": "https://x/1.png"}


@pytest.mark.parametrize(
    "url",
    ["ftp://x/h", "https://user:pw@x/h", "http://hooks.example/h", "nohost"],
)
def test_a_webhook_url_off_loopback_must_be_https_and_carry_no_password(url: str) -> None:
    with pytest.raises(WebhookUrlInvalid, match="--url"):
        check_url(url, allow_http=False)
    assert check_url("http://127.0.0.1:9/h", allow_http=False)
    assert check_url("http://hooks.example/h", allow_http=True)


def test_a_token_in_the_webhook_urls_query_is_never_recorded() -> None:
    assert shown_url("https://h.example/hook?token=s3cret&x=1#f") == "https://h.example/hook?***"
    assert shown_url("https://h.example/hook") == "https://h.example/hook"


def test_webhook_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]


def _service_error(status: int) -> Exception:
    return oss_exc.OperationError(
        name="PutObjectAcl",
        error=oss_exc.ServiceError(
            status_code=status, code="X", request_id="r", message="m", ec="", timestamp="",
            request_target="",
        ),
    )  # fmt: skip


def test_oss_errors_per_object_name_the_object_and_the_permission() -> None:
    denied = classify(_service_error(403), "PutObjectAcl", "oss://b/k")
    assert isinstance(denied, ObjectDenied) and "oss:PutObjectAcl" in str(denied)
    assert isinstance(classify(_service_error(404), "CopyObject", "oss://b/k"), ObjectGone)
    assert isinstance(classify(_service_error(400), "CopyObject", "oss://b/k"), ObjectActionFailed)
    assert classify(_service_error(503), "CopyObject", "oss://b/k") is None  # retried
    assert classify(ConnectionResetError(), "CopyObject", "oss://b/k") is None


def test_the_emulator_reads_a_copy_source_as_oss_encodes_it() -> None:
    assert parse_copy_source("/bkt/a/x%20y%2B%C3%A9.png") == ("bkt", "a/x y+é.png")
    assert parse_copy_source("bkt/a.png") is None
    assert parse_copy_source("/bkt/") is None
    assert is_object_extra("PUT", "acl", {}) and is_object_extra("GET", "acl=", {})
    assert is_object_extra("PUT", "", {"x-oss-copy-source": "/b/k"})
    assert is_object_extra("DELETE", "", {})
    assert not is_object_extra("PUT", "", {}) and not is_object_extra("GET", "", {})


def test_act_settings_are_read_and_checked_once() -> None:
    assert load_settings({}).act.qps == 20.0 and load_settings({}).act.webhook_secret == b""
    for bad in ("0", "-1", "fast", "inf", "nan"):
        with pytest.raises(ConfigError, match="IMGMOD_ACT_QPS"):
            load_settings({"IMGMOD_ACT_QPS": bad})
    with pytest.raises(ConfigError, match="IMGMOD_WEBHOOK_SECRET") as short:
        load_settings({"IMGMOD_WEBHOOK_SECRET": "short-secret"})
    assert "short-secret" not in str(short.value)
    settings = load_settings({"IMGMOD_WEBHOOK_SECRET": "x" * 16})
    assert settings.act.webhook_secret == b"x" * 16 and "x" * 16 not in repr(settings)
