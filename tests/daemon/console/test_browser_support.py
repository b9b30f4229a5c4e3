"""Without a browser the console's browser tests skip and say why; where CI requires them
(``SOCBRIDGE_BROWSER_TESTS=required``) a missing browser fails instead."""

from __future__ import annotations

import pytest

from tests.support import browser


def test_a_missing_browser_skips_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(browser, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.delenv("SOCBRIDGE_BROWSER_TESTS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y chromium chromium-driver"):
        browser.require_browser()


def test_a_missing_browser_fails_where_the_tests_are_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(browser, "CHROMEDRIVER", "/nonexistent/chromedriver")
    monkeypatch.setenv("SOCBRIDGE_BROWSER_TESTS", "required")
    with pytest.raises(pytest.fail.Exception, match="required but browser tests need"):
        browser.require_browser()
