"""The review page (`imgmod ui`) over real HTTP and in a real browser: a real job on the
emulator fills a database, `imgmod ui adduser` writes the users file, a real `imgmod ui` process
serves it on a loopback port, and every check reads SQL back.

One world per module (the job takes a few seconds), shared by every test here, server-side
(requests) and in headless Chromium; each test signs in as its own user, so a lease or a skip
list of one test never meets another's.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from tests.support import (
    open_stack,
    run_imgmod,
    running_emulator,
    stack_env,
    start_imgmod,
    wait_until,
)
from worker import store
from worker.emulator import TEST_ACCESS_KEY_SECRET
from worker.processes import ImageServerHandle, private_redis
from worker.store.schema import decisions, events
from worker.ui.auth import add_user

pytestmark = pytest.mark.service

IMAGES = 70  # 70 in the review queue: 20 for the keyboard, the rest for the other tests
XSS_IMAGE = 999
USERS = {  # name: role; each test signs in as its own
    "alice": "reviewer", "bob": "reviewer", "erin": "reviewer", "frank": "reviewer",
    "gina": "reviewer", "hugo": "reviewer", "ivan": "reviewer", "judy": "reviewer",
    "carol": "viewer", "dave": "admin",
}  # fmt: skip
XSS_DATA = {
    "RiskLevel": "high",
    "Result": [
        {"Label": "<img src=x onerror=alert(1)>", "Confidence": 91.5, "Description": "<u>x</u>",
         "RiskLevel": "high"},
    ],
    "Ext": {"TextInImage": {"OcrResult": [{"Text": '<script>alert("ocr")</script>'}],
                            "RiskWord": ["<b>bold</b>"], "CustomText": None}},
}  # fmt: skip


@dataclass
class UiWorld:
    url: str
    engine: sa.Engine
    job_id: int
    review_items: list[int]
    xss_item: int
    log: Path
    passwords: dict[str, str]
    access_key_secret: str

    def rows(self, sql: str) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.text(sql)).all())


def _fill_review_queue(engine: sa.Engine, job_id: int) -> list[int]:
    """What `imgmod decide` stores for a `review` rule, written directly so the queue holds
    every answered image: priorities 0-4, so the order is by priority, then by decision."""
    done = [
        int(i)
        for (i,) in engine.connect().execute(
            sa.select(store.items.c.id)
            .where(store.items.c.job_id == job_id, store.items.c.state == "done")
            .order_by(store.items.c.id)
        )
    ]
    store.record_decisions(
        engine,
        [
            store.NewDecision(item, job_id, "review", "policy", "policy-test", rule="medium-review",
                              priority=item % 5, policy_name="house", policy_version="1")
            for item in done
        ],
    )  # fmt: skip
    return done


@pytest.fixture(scope="module")
def ui_world(
    tmp_path_factory: pytest.TempPathFactory, image_server: ImageServerHandle
) -> Iterator[UiWorld]:
    tmp = tmp_path_factory.mktemp("ui")
    rules = tmp / "rules.json"
    rules.write_text(json.dumps([{"url": image_server.image_url(XSS_IMAGE), "data": XSS_DATA}]))
    with (
        running_emulator(qps=200, latency_ms=2, rules=rules) as emulator,
        private_redis() as redis,
    ):
        env = stack_env(
            f"sqlite:///{tmp / 'ui.db'}", redis.url, emulator, IMGMOD_UI_USERS=str(tmp / "users")
        )
        with open_stack(env, tmp, emulator, image_server) as stack:
            refs = [image_server.image_url(i) for i in range(IMAGES)]
            src = stack.write("refs.txt", [*refs, image_server.image_url(XSS_IMAGE)])
            stack.start_worker()
            run = stack.imgmod("run", str(src), "--job", "ui", "--stall-seconds", "60")
            assert run.returncode == 0, run.stdout + run.stderr
            job_id = stack.job_id("ui")
            review = _fill_review_queue(stack.engine, job_id)
            passwords = {name: f"pw-{name}-Secret!9" for name in USERS}
            for name, role in USERS.items():  # the command once; the others its function
                if name != "alice":
                    add_user(tmp / "users", name, role, passwords[name])
                    continue
                added = run_imgmod(env, "ui", "adduser", name, "--role", role, "--password-stdin",
                                   stdin=passwords[name] + "\n")  # fmt: skip
                assert added.returncode == 0, added.stderr
                assert added.stdout.strip() == f"added alice (reviewer) in {tmp / 'users'}"
            log = tmp / "ui.log"
            with log.open("w") as sink:
                server = start_imgmod(env, "ui", "--port", "0", stdout=sink, stderr=sink)
            try:
                found: list[str] = []

                def listening() -> bool:
                    found[:] = re.findall(r"imgmod ui: (http://[\d.:]+)/", log.read_text())
                    return bool(found) or server.poll() is not None

                wait_until(listening, 60, "imgmod ui to listen")
                assert found, log.read_text()
                xss = stack.scalar(
                    f"SELECT id FROM items WHERE image_url = '{image_server.image_url(XSS_IMAGE)}'"
                )
                yield UiWorld(found[0], stack.engine, job_id, review, int(xss), log, passwords,
                              TEST_ACCESS_KEY_SECRET)  # fmt: skip
            finally:
                server.terminate()
                server.wait(timeout=20)


def sign_in(world: UiWorld, name: str) -> requests.Session:
    """A requests session signed in as ``name`` through the login form."""
    client = requests.Session()
    page = client.get(world.url + "/login", timeout=10).text
    got = client.post(
        world.url + "/login",
        data={"csrf": _csrf(page), "name": name, "password": world.passwords[name]},
        timeout=10,
    )
    assert got.status_code == 200 and got.url.endswith("/queue"), got.text[:500]
    return client


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page[:500]
    return found.group(1)


def _current_item(page: str) -> int:
    found = re.search(r'id="card" data-item="(\d+)"', page)
    assert found, page[:2000]
    return int(found.group(1))


def _review_events(world: UiWorld, actor: str) -> list[tuple[int, str]]:
    with world.engine.connect() as conn:
        rows = conn.execute(
            sa.select(events.c.item_id, events.c.what)
            .where(events.c.actor == actor, events.c.kind.in_(["review", "undo"]))
            .order_by(events.c.id)
        ).all()
    return [(int(item), str(what)) for item, what in rows]


def test_every_page_needs_a_signed_in_user(ui_world: UiWorld):
    anonymous = requests.Session()
    for path in ("/queue", "/browse", "/dashboard", "/export.csv", "/item/1", "/image/1",
                 "/dashboard/data?job=ui"):  # fmt: skip
        got = anonymous.get(ui_world.url + path, allow_redirects=False, timeout=10)
        assert got.status_code == 303, path
        assert got.headers["location"].startswith("/login?next="), path
    refused = anonymous.post(ui_world.url + "/queue/decide", data={"item": "1"}, timeout=10)
    assert refused.status_code in (401, 403)
    page = anonymous.get(ui_world.url + "/login", timeout=10)
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert page.headers["referrer-policy"] == "no-referrer"


def test_a_wrong_password_is_refused_and_signs_nobody_in(ui_world: UiWorld):
    client = requests.Session()
    login = client.get(ui_world.url + "/login", timeout=10)
    wrong = client.post(
        ui_world.url + "/login",
        data={"csrf": _csrf(login.text), "name": "frank", "password": "not-his-password"},
        allow_redirects=False,
        timeout=10,
    )
    assert wrong.status_code == 401
    assert "wrong name or password" in wrong.text
    after = client.get(ui_world.url + "/queue", allow_redirects=False, timeout=10)
    assert after.status_code == 303


def test_posts_without_the_csrf_token_change_nothing(ui_world: UiWorld):
    client = sign_in(ui_world, "frank")
    page = client.get(ui_world.url + "/queue", timeout=10).text
    item = _current_item(page)
    for data in ({"item": item, "decision": "block"}, {"item": item, "decision": "block",
                                                       "csrf": "forged" * 8}):  # fmt: skip
        refused = client.post(ui_world.url + "/queue/decide", data=data, timeout=10)
        assert refused.status_code == 403
        assert "CSRF token" in refused.text
    assert _review_events(ui_world, "frank") == []
    # with its token the same POST is recorded
    done = client.post(
        ui_world.url + "/queue/decide",
        data={"item": item, "decision": "pass", "csrf": _csrf(page)},
        timeout=10,
    )
    assert done.status_code == 200 and done.url.endswith("/queue")
    assert _review_events(ui_world, "frank") == [(item, "pass")]


def test_a_viewer_browses_but_cannot_decide(ui_world: UiWorld):
    client = sign_in(ui_world, "carol")
    page = client.get(ui_world.url + "/queue", timeout=10).text
    assert 'id="viewer-note"' in page and 'id="decide"' not in page
    item = ui_world.review_items[-1]
    refused = client.post(
        ui_world.url + "/queue/decide",
        data={"item": item, "decision": "block", "csrf": _csrf(page)},
        timeout=10,
    )
    assert refused.status_code == 403
    assert "carol is a viewer; this needs the reviewer role" in refused.text
    assert _review_events(ui_world, "carol") == []
    assert client.get(ui_world.url + "/browse?job=ui", timeout=10).status_code == 200


def test_forged_ids_and_someone_elses_lease_are_refused(ui_world: UiWorld):
    holder = sign_in(ui_world, "gina")
    held = _current_item(holder.get(ui_world.url + "/queue", timeout=10).text)
    other = sign_in(ui_world, "hugo")
    page = other.get(ui_world.url + "/queue", timeout=10).text
    assert _current_item(page) != held  # the lease keeps gina's image from hugo
    token = _csrf(page)
    cases = {
        str(held): (409, "is not leased to you"),
        "99999999": (409, "is not leased to you"),
        "1 OR 1=1": (400, "item must be an id"),
        "<b>7</b>": (400, "item must be an id"),
    }
    for item, (status, message) in cases.items():
        got = other.post(
            ui_world.url + "/queue/decide",
            data={"item": item, "decision": "block", "csrf": token},
            timeout=10,
        )
        assert got.status_code == status, item
        assert message in got.text, item
    bad = other.post(
        ui_world.url + "/queue/decide",
        data={"item": _current_item(page), "decision": "delete", "csrf": token},
        timeout=10,
    )
    assert bad.status_code == 409 and "not one a reviewer makes" in bad.text
    assert _review_events(ui_world, "hugo") == []


def test_undo_is_a_new_decision_and_a_stale_undo_changes_nothing(ui_world: UiWorld):
    client = sign_in(ui_world, "ivan")
    page = client.get(ui_world.url + "/queue", timeout=10).text
    first = _current_item(page)
    after = client.post(
        ui_world.url + "/queue/decide",
        data={"item": first, "decision": "block", "reason": "<i>logo</i>", "csrf": _csrf(page)},
        timeout=10,
    ).text
    assert _current_item(after) != first
    undone = client.post(
        ui_world.url + "/queue/undo",
        data={
            "decision_id": re.search(r'name="decision_id" value="(\d+)"', after).group(1),
            "csrf": _csrf(after),
        },  # fmt: skip
        timeout=10,
    ).text
    assert _current_item(undone) == first  # back to the reviewer who undid it
    history = store.item_decisions(ui_world.engine, first)
    assert [(d.decision, d.source) for d in history[-3:]] == [
        ("review", "policy"), ("block", "review"), ("review", "review")
    ]  # fmt: skip
    assert _review_events(ui_world, "ivan") == [(first, "block"), (first, "review")]

    # decide it again, then a policy run decides after ivan: his undo is stale
    mine = client.post(
        ui_world.url + "/queue/decide",
        data={"item": first, "decision": "pass", "csrf": _csrf(undone)},
        timeout=10,
    ).text
    decision_id = re.search(r'name="decision_id" value="(\d+)"', mine).group(1)
    store.record_decisions(
        ui_world.engine,
        [store.NewDecision(first, ui_world.job_id, "block", "policy", "policy-v9", rule="v9")],
    )
    stale = client.post(
        ui_world.url + "/queue/undo",
        data={"decision_id": decision_id, "csrf": _csrf(mine)},
        timeout=10,
    )
    assert stale.status_code == 409
    assert "was decided again after your decision" in stale.text
    assert store.item_decisions(ui_world.engine, first)[-1].decision == "block"
    # and a decision that is not yours cannot be undone at all
    foreign = client.post(
        ui_world.url + "/queue/undo",
        data={"decision_id": str(history[-3].id), "csrf": _csrf(mine)},
        timeout=10,
    )
    assert foreign.status_code == 409 and "is not a review of yours" in foreign.text


def test_labels_ocr_text_and_reasons_are_escaped(ui_world: UiWorld):
    client = sign_in(ui_world, "carol")
    page = client.get(f"{ui_world.url}/item/{ui_world.xss_item}", timeout=10).text
    assert "&lt;script&gt;alert(&#34;ocr&#34;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page  # the label
    assert "<script>alert" not in page and "<img src=x" not in page


def test_browse_filters_live_in_the_url_and_the_export_is_the_view(ui_world: UiWorld):
    client = sign_in(ui_world, "carol")
    with ui_world.engine.connect() as conn:
        newest = (
            sa.select(sa.func.max(decisions.c.id)).group_by(decisions.c.item_id).scalar_subquery()
        )
        review = {
            int(i)
            for (i,) in conn.execute(
                sa.select(decisions.c.item_id).where(
                    decisions.c.id.in_(newest), decisions.c.decision == "review"
                )
            )
        }
    query = "job=ui&decision=review&state=done"
    page = client.get(f"{ui_world.url}/browse?{query}", timeout=10).text
    shown = {int(i) for i in re.findall(r'<tr data-item="(\d+)"', page)}
    assert shown == set(sorted(review)[:50])
    jsonl = client.get(f"{ui_world.url}/export.jsonl?{query}", timeout=30)
    records = [json.loads(line) for line in jsonl.text.splitlines()]
    assert {r["item_id"] for r in records} == review
    assert {r["decision"] for r in records} == {"review"}
    table = list(csv.DictReader(io.StringIO(client.get(f"{ui_world.url}/export.csv?{query}",
                                                       timeout=30).text)))  # fmt: skip
    assert {int(r["item_id"]) for r in table} == review
    bad = client.get(f"{ui_world.url}/browse?job=ui&min=abc&risk=purple", timeout=10).text
    assert "min=&#39;abc&#39; is not a number" in bad
    assert "risk=&#39;purple&#39; is not one of high, medium, low, none" in bad
    refused = client.get(f"{ui_world.url}/export.csv?min=abc", timeout=10)
    assert refused.status_code == 400


def test_the_dashboard_serves_the_report_figures_of_a_job(ui_world: UiWorld):
    client = sign_in(ui_world, "carol")
    figures = client.get(f"{ui_world.url}/dashboard/data?job=ui", timeout=30).json()
    states = {c["key"]: c["value"] for c in figures["states"] if c["value"]}
    assert states == dict(ui_world.rows("SELECT state, count(*) FROM items GROUP BY state"))
    page = client.get(f"{ui_world.url}/dashboard?job=ui", timeout=10).text
    assert 'data-chart="labels"' in page and "/assets/chart.umd.min.js" in page
    assert client.get(f"{ui_world.url}/assets/chart.umd.min.js", timeout=10).status_code == 200


def test_the_log_holds_no_password_or_secret(ui_world: UiWorld):
    log = ui_world.log.read_text(encoding="utf-8", errors="replace")
    assert "GET /queue" in log  # the access log is there
    for secret in (*ui_world.passwords.values(), ui_world.access_key_secret):
        assert secret not in log


def test_acting_on_objects_needs_an_admin_and_a_confirmation_naming_the_count(ui_world):
    reviewer = sign_in(ui_world, "frank")
    assert reviewer.get(f"{ui_world.url}/act?job=ui", timeout=10).status_code == 403
    admin = sign_in(ui_world, "dave")
    page = admin.get(f"{ui_world.url}/act?job=ui&decision=review&mode=freeze", timeout=30).text
    # every image of this job is a URL: nothing to freeze, all named as no OSS objects
    assert 'data-changes="0"' in page and "are no OSS objects" in page
    assert 'id="act"' not in page  # no button for nothing
    base = {"csrf": _csrf(page), "job": "ui", "decision": "review", "mode": "freeze"}
    wrong = admin.post(f"{ui_world.url}/act", data={**base, "confirm": "12"}, timeout=30)
    assert wrong.status_code == 409
    assert "not started: 0 objects would freeze now; type exactly that number" in wrong.text
    forged = admin.post(f"{ui_world.url}/act", data={**base, "confirm": "0", "csrf": "x" * 43},
                        timeout=30)  # fmt: skip
    assert forged.status_code == 403
    with ui_world.engine.connect() as conn:
        acted = conn.execute(
            sa.select(sa.func.count()).select_from(events).where(events.c.kind == "action")
        ).scalar_one()
    assert acted == 0


def test_imgmod_ui_refuses_in_one_line_without_users_or_a_free_port(tmp_path):
    import socket

    env = {"IMGMOD_DATABASE_URL": f"sqlite:///{tmp_path / 'db'}",
           "IMGMOD_UI_USERS": str(tmp_path / "users")}  # fmt: skip
    missing = run_imgmod(env, "ui", "--port", "0", timeout=60)
    assert missing.returncode == 2
    assert (
        missing.stderr.strip()
        .splitlines()[-1]
        .endswith("add a user with `imgmod ui adduser NAME`, or point IMGMOD_UI_USERS at the file")
    )
    short = run_imgmod(env, "ui", "adduser", "zed", "--password-stdin", stdin="short\n")
    assert short.returncode == 2 and "at least 8 characters; nothing was changed" in short.stderr
    assert not (tmp_path / "users").exists()
    add_user(tmp_path / "users", "zed", "viewer", "long-enough")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        busy = run_imgmod(env, "ui", "--port", str(port), timeout=60)
    assert busy.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in busy.stderr
    assert "Traceback" not in missing.stderr + short.stderr + busy.stderr


# --------------------------------------------------------------------------- in a real browser


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One headless Chromium for the module's browser tests (each signs in as its user)."""
    from tests.support import browser as chromium_support

    reason = chromium_support.missing()
    if reason is not None:
        pytest.skip(reason)
    with chromium_support.start_browser() as driver:
        yield driver


def _browser_sign_in(driver: Any, world: UiWorld, name: str, password: str | None = None) -> None:
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    driver.get(world.url + "/login")
    driver.find_element(By.NAME, "name").send_keys(name)
    driver.find_element(By.NAME, "password").send_keys(password or world.passwords[name])
    driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()


def _shown_item(driver: Any) -> int | None:
    """The id of the image on the card, read in one script run inside the page: a find, then a
    read, races the page replacing the card for the next image (chromedriver then fails with
    "Node with given id does not belong to the document")."""
    item = driver.execute_script(
        "const card = document.getElementById('card'); return card ? card.dataset.item : null;"
    )
    try:
        return int(item)
    except (TypeError, ValueError):
        return None


def _press(driver: Any, key: str, leaving: int) -> int:
    """Press ``key`` on the page (keyboard only) and wait for the next image; its id."""
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(key).perform()
    wait_until(lambda: _shown_item(driver) not in (None, leaving), 15, f"the image after {key}")
    shown = _shown_item(driver)
    assert shown is not None
    return shown


def test_in_a_browser_sign_in_is_required_and_a_wrong_password_is_refused(ui_world, chromium):
    from selenium.webdriver.common.by import By

    chromium.delete_all_cookies()
    chromium.get(ui_world.url + "/queue")
    assert "/login?next=" in chromium.current_url
    _browser_sign_in(chromium, ui_world, "alice", "wrong-password-1")
    # The click returns before the refusal's page has loaded on a loaded box: poll for it.
    wait_until(lambda: chromium.find_elements(By.CSS_SELECTOR, "p.error"), 15, "the refusal's page")
    error = chromium.find_element(By.CSS_SELECTOR, "p.error").text
    assert error == "wrong name or password"
    assert _shown_item(chromium) is None
    _browser_sign_in(chromium, ui_world, "alice")
    wait_until(lambda: _shown_item(chromium) is not None, 15, "the queue after signing in")
    assert chromium.current_url.endswith("/queue")


def test_a_reviewer_clears_20_images_with_the_keyboard_and_undoes_one(ui_world, chromium):
    from tests.support.browser import console_errors, screenshot

    _browser_sign_in(chromium, ui_world, "judy")
    wait_until(lambda: _shown_item(chromium) is not None, 15, "judy's queue")
    console_errors(chromium)  # drop what earlier tests left (a refused sign-in's 401)
    screenshot(chromium, "ui_queue")
    shown = _shown_item(chromium)
    assert shown is not None
    decided: list[tuple[int, str]] = []
    for n in range(20):
        key = "b" if n % 3 == 0 else "p"
        decided.append((shown, {"b": "block", "p": "pass"}[key]))
        shown = _press(chromium, key, shown)
    assert _review_events(ui_world, "judy") == decided
    assert len({item for item, _ in decided}) == 20
    assert console_errors(chromium) == []

    last_item = decided[-1][0]
    back = _press(chromium, "u", shown)
    assert back == last_item  # the undone image is shown again, to judy
    assert _review_events(ui_world, "judy")[-1] == (last_item, "review")
    assert store.item_decisions(ui_world.engine, last_item)[-1].reason == (
        f"undo of decision {store.item_decisions(ui_world.engine, last_item)[-2].id}"
    )


def test_two_browser_sessions_never_get_the_same_image(ui_world, chromium):
    from tests.support.browser import start_browser

    with start_browser() as second:
        _browser_sign_in(chromium, ui_world, "bob")
        _browser_sign_in(second, ui_world, "erin")
        wait_until(lambda: _shown_item(chromium) is not None, 15, "bob's queue")
        wait_until(lambda: _shown_item(second) is not None, 15, "erin's queue")
        for _ in range(4):
            bob, erin = _shown_item(chromium), _shown_item(second)
            assert bob is not None and erin is not None and bob != erin
            _press(chromium, "p", bob)
            second.refresh()  # erin keeps her image while bob moves on
            assert _shown_item(second) == erin
            _press(second, "b", erin)
    bobs = {item for item, _ in _review_events(ui_world, "bob")}
    erins = {item for item, _ in _review_events(ui_world, "erin")}
    assert bobs.isdisjoint(erins)  # no image was shown to, or decided by, both
    assert len(_review_events(ui_world, "bob")) == len(_review_events(ui_world, "erin")) == 4


def test_in_a_browser_a_viewer_cannot_decide_and_ocr_html_is_text(ui_world, chromium):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    from tests.support.browser import console_errors, screenshot

    _browser_sign_in(chromium, ui_world, "carol")
    wait_until(lambda: "/queue" in chromium.current_url, 15, "carol signed in")
    console_errors(chromium)  # drop what earlier tests left
    assert chromium.find_element(By.ID, "viewer-note").is_displayed()
    ActionChains(chromium).send_keys("b").perform()
    assert _review_events(ui_world, "carol") == []

    chromium.get(f"{ui_world.url}/item/{ui_world.xss_item}")
    facts = [li.text for li in chromium.find_elements(By.CSS_SELECTOR, "li.fact")]
    assert '<script>alert("ocr")</script>' in facts and "<b>bold</b>" in facts
    label = chromium.find_element(By.CSS_SELECTOR, "#labels tbody td").text
    assert label == "<img src=x onerror=alert(1)>"
    with pytest.raises(NoAlertPresentException):
        chromium.switch_to.alert.accept()
    blurred = chromium.find_element(By.CSS_SELECTOR, "figure.blurred")  # high risk: blurred
    blurred.click()
    assert chromium.find_elements(By.CSS_SELECTOR, "figure.blurred") == []

    chromium.get(f"{ui_world.url}/browse?job=ui")
    rows = chromium.find_elements(By.CSS_SELECTOR, "#results tbody tr[data-item]")
    assert len(rows) == 50
    screenshot(chromium, "ui_browse")
    chromium.get(f"{ui_world.url}/dashboard?job=ui")
    wait_until(
        lambda: chromium.execute_script("return document.body.dataset.drawn") == "1",
        15,
        "the dashboard's charts",
    )
    screenshot(chromium, "ui_dashboard")
    assert console_errors(chromium) == []
