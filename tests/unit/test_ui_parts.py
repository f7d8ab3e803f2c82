"""The review page's pure parts: users file and password hashes, roles, CSRF tokens, the URL's
filters, Ext facts as text, where a picture comes from, the settings, the sign-in redirect."""

from __future__ import annotations

import stat
from datetime import datetime, timezone

import pytest

from worker.settings import ConfigError, load_settings
from worker.ui import csrf
from worker.ui.auth import (
    UsersFile,
    UsersFileError,
    add_user,
    allowed,
    check_password,
    hash_password,
    parse_users,
)
from worker.ui.filters import parse_view
from worker.ui.images import Picture, local_image, src_for
from worker.ui.present import ext_facts
from worker.ui.routes_auth import _next


def test_a_password_hash_is_salted_and_checks_only_its_password():
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first != second and first.startswith("scrypt$16384$8$1$")
    assert check_password("correct horse", first)
    assert not check_password("correct hors", first)
    assert not check_password("correct horse", "plain:correct horse")


def test_add_user_writes_an_owner_only_file_and_replaces_a_role(tmp_path):
    path = tmp_path / "users"
    assert add_user(path, "alice", "viewer", "secret-one") is True
    assert add_user(path, "alice", "reviewer", "secret-two") is False
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    users = UsersFile(path)
    assert users.get("alice").role == "reviewer"
    assert users.verify("alice", "secret-two") is not None
    assert users.verify("alice", "secret-one") is None
    assert users.verify("nobody", "secret-two") is None
    assert "secret" not in path.read_text() and "scrypt$" not in repr(users.get("alice"))
    for name, role, password, message in (
        ("bad name", "viewer", "long-enough", "may hold only"),
        ("bob", "root", "long-enough", "is not one of viewer, reviewer, admin"),
        ("bob", "viewer", "short", "at least 8 characters"),
    ):
        with pytest.raises(ValueError, match=message):
            add_user(path, name, role, password)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alice reviewer", "line 1: expected NAME ROLE HASH"),
        ("# comment\nalice boss scrypt$1$1$1$AA==$AA==", "line 2: role 'boss' is not one of"),
        ("alice viewer md5$abc", "line 1: the password hash is not scrypt"),
        ("a<b viewer scrypt$1$1$1$AA==$AA==", "line 1: user name 'a<b' may hold only"),
        ("a viewer scrypt$1$1$1$AA==$AA==\na admin scrypt$1$1$1$AA==$AA==", "line 2: user 'a' is"),
    ],
)
def test_a_bad_users_file_names_the_file_and_line(text, message):
    with pytest.raises(UsersFileError, match=message):
        parse_users(text, "users.txt")


def test_a_missing_users_file_says_how_to_make_one(tmp_path):
    with pytest.raises(UsersFileError, match="imgmod ui adduser NAME"):
        UsersFile(tmp_path / "none").users()


def test_roles_are_ordered_viewer_reviewer_admin():
    assert allowed("admin", "reviewer") and allowed("reviewer", "reviewer")
    assert not allowed("viewer", "reviewer") and not allowed("reviewer", "admin")
    assert not allowed("root", "viewer")


def test_csrf_token_is_per_session_and_checked_exactly():
    session: dict[str, object] = {}
    token = csrf.session_token(session)
    assert csrf.session_token(session) == token and len(token) >= 32
    assert csrf.token_ok(session, token)
    for given in (None, "", token[:-1], token + "x"):
        assert not csrf.token_ok(session, given)
    assert not csrf.token_ok({}, token)


def test_browse_filters_come_from_the_url_and_bad_values_are_named():
    view = parse_view(
        {
            "job": ["nightly"],
            "state": ["done,failed"],
            "decision": ["review"],
            "label": ["porn"],
            "min": ["80"],
            "max": ["100"],
            "risk": ["high", "medium"],
            "since": ["2026-12-01"],
            "until": ["2026-12-06"],
            "after": ["120"],
        }
    )
    assert view.problems == ()
    assert view.job == "nightly" and view.after == 120
    assert view.flt.states == ("done", "failed") and view.flt.risk_levels == ("high", "medium")
    assert (view.flt.min_confidence, view.flt.max_confidence) == (80.0, 100.0)
    assert view.flt.since == datetime(2026, 12, 1, tzinfo=timezone.utc)
    assert view.flt.until == datetime(2026, 12, 7, tzinfo=timezone.utc)  # the whole last day
    assert "after=5" in view.link(after=5) and "job=nightly" in view.link(after=5)
    bad = parse_view({"min": ["x"], "max": ["150"], "state": ["lost"], "since": ["12/1"]})
    assert bad.problems == (
        "min='x' is not a number (a confidence, 0 to 100)",
        "max='150' is outside 0 to 100",
        "since='12/1' is not a date (YYYY-MM-DD)",
        "state='lost' is not one of pending, queued, running, done, failed, rejected, paused",
    )
    assert bad.flt.states == () and bad.flt.min_confidence is None
    assert parse_view({"min": ["90"], "max": ["10"]}).problems == ("min=90 is above max=10",)


def test_ext_facts_read_as_short_lists_of_plain_text():
    ext = {
        "TextInImage": {
            "OcrResult": [{"Text": "<script>x</script>"}, {"Text": ""}],
            "RiskWord": ["bad word"],
            "CustomText": [{"LibName": "Lib A", "KeyWords": "kw"}],
        },
        "CustomImage": [{"LibName": "Images", "ImageId": "abc"}],
        "LogoData": [{"Logo": [{"Name": "DingTalk", "Label": "pt_logo", "Confidence": 96.15}]}],
        "PublicFigure": [{"FigureName": "John Doe", "FigureId": "x1"}],
    }
    assert ext_facts(ext) == [
        ("Text in image", ["<script>x</script>"]),
        ("Risk words", ["bad word"]),
        ("Custom text library", ["Lib A / kw"]),
        ("Custom image library", ["Images / abc"]),
        ("Logos", ["DingTalk / pt_logo / 96.15"]),
        ("Public figures", ["John Doe / x1"]),
    ]
    assert ext_facts(None) == [] and ext_facts({"TextInImage": None}) == []


def test_a_picture_is_the_url_itself_or_this_servers_image_route(tmp_path):
    url = Picture(1, "url", "https://img.example/a.png", None, None, None, None)
    oss = Picture(2, "oss", None, "bucket", "a/b.jpg", "cn-shanghai", None)
    image = tmp_path / "c.png"
    image.write_bytes(b"\x89PNG")
    local = Picture(3, "file", None, None, None, None, str(image))
    assert src_for(url) == "https://img.example/a.png"
    assert src_for(oss) == "/image/2" and src_for(local) == "/image/3"
    assert src_for(Picture(4, "invalid", None, None, None, None, None)) is None
    assert local_image(local) == image
    not_an_image = tmp_path / "passwd"
    not_an_image.write_text("x")
    assert local_image(Picture(5, "file", None, None, None, None, str(not_an_image))) is None


def test_ui_settings_are_safe_by_default_and_refused_in_one_line():
    ui = load_settings({}).ui
    assert (ui.trusted_header, ui.blur_high_risk, ui.session_seconds) == ("", True, 28800)
    assert load_settings({"IMGMOD_UI_BLUR": "0"}).ui.blur_high_risk is False
    assert load_settings({"IMGMOD_UI_TRUSTED_HEADER": "X-Forwarded-User"}).ui.trusted_header == (
        "x-forwarded-user"
    )
    for env, message in (
        ({"IMGMOD_UI_BLUR": "maybe"}, "IMGMOD_UI_BLUR='maybe': use 1 or 0"),
        ({"IMGMOD_UI_SESSION_SECONDS": "0"}, "IMGMOD_UI_SESSION_SECONDS='0': give a whole"),
        ({"IMGMOD_UI_TRUSTED_HEADER": "X User:"}, "is not a header name"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_settings(env)


@pytest.mark.parametrize(
    ("given", "target"),
    [
        ("/browse?job=a", "/browse?job=a"),
        ("//evil.example/x", "/queue"),
        ("https://evil.example/", "/queue"),
        ("/\\evil.example", "/queue"),
        (None, "/queue"),
    ],
)
def test_after_signing_in_the_page_goes_only_to_a_path_on_this_site(given, target):
    assert _next(given) == target


def _request(app: object, session: dict, headers: dict[str, str], client: str):
    from starlette.requests import Request

    scope = {
        "type": "http",
        "app": app,
        "session": session,
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": (client, 50000),
        "path": "/queue",
        "query_string": b"",
    }
    return Request(scope)


def test_sessions_expire_and_the_proxy_header_counts_only_from_this_host(tmp_path):
    import time
    from types import SimpleNamespace

    from worker.ui.web import current_user

    add_user(tmp_path / "users", "alice", "reviewer", "long-enough")
    env = {"IMGMOD_UI_USERS": str(tmp_path / "users"), "IMGMOD_UI_SESSION_SECONDS": "60",
           "IMGMOD_UI_TRUSTED_HEADER": "X-Forwarded-User"}  # fmt: skip
    ui = SimpleNamespace(settings=load_settings(env), users=UsersFile(tmp_path / "users"))
    app = SimpleNamespace(state=SimpleNamespace(ui=ui))
    fresh = {"user": "alice", "at": int(time.time()) - 30}
    assert current_user(_request(app, fresh, {}, "203.0.113.9")).name == "alice"
    stale = {"user": "alice", "at": int(time.time()) - 61}
    assert current_user(_request(app, stale, {}, "127.0.0.1")) is None
    assert stale == {}  # cleared
    gone = {"user": "mallory", "at": int(time.time())}
    assert current_user(_request(app, gone, {}, "127.0.0.1")) is None
    proxied = {"X-Forwarded-User": "alice"}
    assert current_user(_request(app, {}, proxied, "127.0.0.1")).name == "alice"
    assert current_user(_request(app, {}, proxied, "203.0.113.9")) is None
    assert current_user(_request(app, {}, {"X-Forwarded-User": "mallory"}, "::1")) is None


def test_an_oss_picture_is_a_short_lived_signed_url_made_here(tmp_path):
    from urllib.parse import parse_qs, urlsplit

    from worker.settings import Credentials
    from worker.ui.images import SIGNED_SECONDS, Signer

    settings = load_settings({"IMGMOD_OSS_ENDPOINT": "http://127.0.0.1:9"})
    picture = Picture(2, "oss", None, "bucket", "a/b c.jpg", "ap-southeast-1", None)
    assert Signer(settings, None).url(picture) is None  # no credentials: nothing to sign with
    signer = Signer(settings, Credentials("AKIDexample", "secret-example"))
    url = signer.url(picture)
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert parts.path.endswith("/a/b%20c.jpg") and "bucket" in url
    assert SIGNED_SECONDS - 5 <= int(query["x-oss-expires"][0]) <= SIGNED_SECONDS
    assert "x-oss-signature" in query and "secret-example" not in url
    assert signer.url(picture) == url  # cached: the preloaded picture is the one shown
