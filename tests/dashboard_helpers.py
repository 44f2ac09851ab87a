"""Helpers of the dashboard's browser tests: headless Chromium, an in-process server, screenshots.

Chromium and its driver are Debian's ``chromium`` and ``chromium-driver`` (``make test`` and
``.ci/run`` install them when missing); selenium drives them. Without them a test is skipped,
and fails when ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from neoq.testing import wait_for

#: Where the screenshots of docs/dashboard.md go, when ``NEOQ_SCREENSHOTS=1``.
IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"


def _binary(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or (name if os.path.exists(name) else None)
        if found:
            return found
    return None


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session", name="browser")
def chromium() -> Iterator[Any]:
    """A headless Chromium driven by selenium, for the whole session."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install -e '.[dev]')")
    chromium = _binary("chromium", "chromium-browser", "/usr/bin/chromium")
    driver_path = _binary("chromedriver", "/usr/bin/chromedriver")
    if chromium is None or driver_path is None:
        _unavailable("Chromium is not installed: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


class Served:
    """A WSGI application served on 127.0.0.1 in a thread of this process."""

    def __init__(self, app: Callable[..., Any], host: str = "127.0.0.1") -> None:
        self.server = make_server(host, 0, app, threaded=True)
        self.url = f"http://{host}:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def text_of(driver: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def click(driver: Any, css: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, css).click()


def wait_text(driver: Any, css: str, predicate: Callable[[str], bool], timeout: float = 10.0) -> str:
    """Wait until the text of ``css`` satisfies ``predicate``; return it."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    def look() -> str | None:
        try:
            value = text_of(driver, css)
        except (NoSuchElementException, StaleElementReferenceException):
            return None
        return value if predicate(value) else None

    return str(wait_for(look, timeout=timeout, interval=0.05))


def screenshot(driver: Any, name: str) -> None:
    """Save the page as docs/images/dashboard-NAME.png when NEOQ_SCREENSHOTS=1 (``make dashboard-screenshots``)."""
    if os.environ.get("NEOQ_SCREENSHOTS") == "1":
        IMAGES.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(IMAGES / f"dashboard-{name}.png"))
