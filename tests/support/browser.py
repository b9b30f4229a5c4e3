"""A real Chromium driven by Selenium, for the console's browser tests.

Debian's ``chromium`` and ``chromium-driver`` packages (``/usr/bin/chromium``,
``/usr/bin/chromedriver``); nothing is downloaded. Without them the tests skip
and say why, unless ``SOCBRIDGE_BROWSER_TESTS=required`` (``.ci/run`` sets it),
where a missing browser fails the run. Selenium blocks, so every call goes
through a thread: the daemon under test runs on the test's event loop.
Screenshots go to ``artifacts/console/`` (or ``$SOCBRIDGE_ARTIFACTS/console``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("SOCBRIDGE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SOCBRIDGE_CHROMEDRIVER", "/usr/bin/chromedriver")
REPO = Path(__file__).resolve().parents[2]


def artifacts() -> Path:
    base = Path(os.environ.get("SOCBRIDGE_ARTIFACTS", REPO / "artifacts"))
    folder = base / "console"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def require_browser() -> None:
    """Skip (or, when required, fail) unless Chromium, its driver and Selenium are here."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if not missing:
        return
    reason = (
        f"browser tests need {', '.join(missing)} (apt-get install -y chromium chromium-driver)"
    )
    if os.environ.get("SOCBRIDGE_BROWSER_TESTS") == "required":
        pytest.fail(f"SOCBRIDGE_BROWSER_TESTS=required but {reason}")
    pytest.skip(reason)


class Browser:
    """One headless Chromium; every method runs the blocking Selenium call in a thread."""

    def __init__(self) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self._profile = tempfile.mkdtemp(prefix="socbridge-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--window-size=1280,900",
            f"--user-data-dir={self._profile}",
        ):  # fmt: skip
            options.add_argument(flag)
        self.driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        self.driver.set_page_load_timeout(30)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def get(self, url: str) -> None:
        await self.call(self.driver.get, url)

    async def text(self, css: str = "body") -> str:
        from selenium.webdriver.common.by import By

        def read() -> str:
            return "\n".join(e.text for e in self.driver.find_elements(By.CSS_SELECTOR, css))

        return str(await self.call(read))

    async def click(self, css: str) -> None:
        from selenium.webdriver.common.by import By

        await self.call(lambda: self.driver.find_element(By.CSS_SELECTOR, css).click())

    async def submit(self, css: str) -> None:
        """Click ``css`` (a form's button, a link) and wait until the next page has loaded.

        The page being left is marked, and the wait ends once a complete page without the
        mark is there. (Waiting for an element of the old page to go stale can meet
        chromedriver's "node does not belong to the document" in mid-navigation instead.)
        """
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.wait import WebDriverWait

        def loaded(driver: Any) -> bool:
            try:
                return bool(
                    driver.execute_script(
                        "return window.socbridgeLeaving === undefined"
                        " && document.readyState === 'complete'"
                    )
                )
            except WebDriverException:
                return False  # between two pages

        def submit() -> None:
            self.driver.execute_script("window.socbridgeLeaving = true")
            self.driver.find_element(By.CSS_SELECTOR, css).click()
            WebDriverWait(self.driver, 30).until(loaded)

        await self.call(submit)

    async def fill(self, css: str, value: str) -> None:
        from selenium.webdriver.common.by import By

        def fill() -> None:
            element = self.driver.find_element(By.CSS_SELECTOR, css)
            element.clear()
            element.send_keys(value)

        await self.call(fill)

    async def script(self, js: str, *args: Any) -> Any:
        return await self.call(self.driver.execute_script, js, *args)

    async def screenshot(self, name: str) -> Path:
        path = artifacts() / f"{name}.png"
        await self.call(self.driver.save_screenshot, str(path))
        return path

    async def url(self) -> str:
        return str(await self.call(lambda: self.driver.current_url))

    async def close(self) -> None:
        await self.call(self.driver.quit)
        shutil.rmtree(self._profile, ignore_errors=True)
