"""Headless Chromium for tests: Debian's ``chromium`` driven by its own ``chromedriver``.

Why the system browser: nothing can be downloaded here (nor on a CI machine, which has only
what ``scripts/bootstrap`` installs), so Selenium Manager must never run. Passing the driver's
path in ``Service`` is what makes Selenium skip it; the browser binary is named as well.

    with start_browser() as driver:
        driver.get(path.as_uri())
        assert console_errors(driver) == []
        screenshot(driver, "report")        # tests/screenshots/report.png, for a person to look at

The ``browser`` fixture in tests/conftest.py wraps :func:`start_browser` (tests using it are
marked ``service``). Overrides: ``IMGMOD_CHROMIUM``, ``IMGMOD_CHROMEDRIVER``, and
``IMGMOD_SCREENSHOTS`` (the directory screenshots go to; default ``tests/screenshots/``,
ignored by git).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("IMGMOD_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("IMGMOD_CHROMEDRIVER", "/usr/bin/chromedriver")
SCREENSHOTS = Path(os.environ.get("IMGMOD_SCREENSHOTS", ROOT / "tests" / "screenshots"))
WINDOW = (1280, 1800)


class BrowserMissing(RuntimeError):
    """Chromium or chromedriver is not installed; ``./scripts/bootstrap`` installs both."""


@dataclass(frozen=True)
class ConsoleEntry:
    level: str
    message: str
    source: str


def missing() -> str | None:
    """Why a browser cannot start here (a reason for ``pytest.skip``), or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"{path} is missing: run ./scripts/bootstrap (installs chromium and its driver)"
    return None


def options(profile: str) -> Any:
    """Chrome options for a headless, sandbox-free (we run as root in a container) browser
    that keeps its console log (``goog:loggingPrefs``) and talks to nothing but what a test
    opens."""
    from selenium.webdriver.chrome.options import Options

    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--hide-scrollbars",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--user-data-dir={profile}",
        "--lang=en-US",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return opts


@contextmanager
def start_browser() -> Iterator[Any]:
    """A headless Chromium WebDriver, quit (and its profile removed) on exit."""
    reason = missing()
    if reason is not None:
        raise BrowserMissing(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="imgmod-chromium-")
    driver = None
    try:
        driver = webdriver.Chrome(
            service=Service(executable_path=CHROMEDRIVER), options=options(profile)
        )
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        if driver is not None:
            driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console(driver: Any) -> list[ConsoleEntry]:
    """The browser console entries since the last call (Chromium hands each out once)."""
    return [
        ConsoleEntry(e.get("level", ""), e.get("message", ""), e.get("source", ""))
        for e in driver.get_log("browser")
    ]


def console_errors(driver: Any) -> list[ConsoleEntry]:
    """Console errors (level SEVERE: uncaught exceptions, failed loads, console.error) since
    the last call. A test asserts this is empty after its page has done its work."""
    return [entry for entry in console(driver) if entry.level == "SEVERE"]


def screenshot(driver: Any, name: str, directory: Path | None = None) -> Path:
    """Write the page as ``<directory>/<name>.png`` (the whole page height, so a long report
    is seen at once) and return the path; the name is made file-safe."""
    target = directory or SCREENSHOTS
    target.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "page"
    path = target / f"{safe}.png"
    height = driver.execute_script(
        "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)"
    )
    width = WINDOW[0]
    driver.set_window_size(width, min(max(int(height or 0), 600), 16000))
    try:
        if not driver.save_screenshot(str(path)):
            raise OSError(f"could not write the screenshot {path}")
    finally:
        driver.set_window_size(*WINDOW)
    return path
