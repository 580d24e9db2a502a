"""The web console in a real browser (Debian's headless chromium), end to end: a real `binwatch serve` API
process and a real worker on Postgres and Redis (the `deployment` fixture), driven through its pages as a
person would. Screenshots land in test-artifacts/console/ (tests/e2e/browser.py).
"""

from __future__ import annotations

import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from tests.e2e.browser import current_path, screenshot, sign_in, sign_out, wait_for_button, wait_for_path
from tests.e2e.conftest import Deployment, create_key

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def admin_key(deployment: Deployment) -> str:
    return create_key(deployment.jobs, ["admin"])


def test_signing_in_and_out(deployment: Deployment, browser: WebDriver, admin_key: str) -> None:
    url = deployment.api.url
    browser.get(f"{url}/")
    wait_for_path(browser, "/signin")
    screenshot(browser, "signin")

    sign_in(browser, url, admin_key)
    assert current_path(browser) == "/"
    wait_for_button(browser, "Sign out", within="//nav//form")
    screenshot(browser, "overview")

    sign_out(browser)
    wait_for_path(browser, "/signin")
    # The session is gone: the console sends the browser back to sign in.
    browser.get(f"{url}/")
    wait_for_path(browser, "/signin")
