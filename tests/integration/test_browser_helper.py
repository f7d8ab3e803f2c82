"""tests/support/browser.py itself: the system Chromium starts without Selenium Manager, console
errors are collected, screenshots land where a person looks. The page tests build on this."""

from __future__ import annotations

import pytest

from tests.support import browser as chromium

pytestmark = pytest.mark.service


def test_the_browser_reports_console_errors_and_writes_screenshots(browser, tmp_path):
    page = tmp_path / "page.html"
    page.write_text(
        "<!DOCTYPE html><title>t</title><h1 id=x>hello</h1>"
        "<script>console.log('all-good'); console.error('broken: ' + 1); undefinedCall();</script>"
    )
    browser.get(page.as_uri())
    assert browser.find_element("id", "x").text == "hello"
    errors = chromium.console_errors(browser)
    assert any("broken: 1" in e.message for e in errors), errors
    assert any("undefinedCall" in e.message for e in errors), errors
    assert not any("all-good" in e.message for e in errors)
    assert chromium.console_errors(browser) == []  # each entry is handed out once
    shot = chromium.screenshot(browser, "helper check/1", tmp_path / "shots")
    assert shot == tmp_path / "shots" / "helper_check_1.png"
    assert shot.read_bytes().startswith(b"\x89PNG")
    # the system browser, driven by the system driver: nothing was fetched by Selenium Manager
    assert browser.capabilities["browserName"] == "chrome"
    assert browser.service.path == chromium.CHROMEDRIVER
