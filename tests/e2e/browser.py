"""Helpers for the web console's real-browser tests: Debian's headless chromium, driven by its chromedriver.

The browser is always /usr/bin/chromium with /usr/bin/chromedriver (`make test` installs them through
scripts/ensure-browser.sh); Selenium Manager is never asked to find or download anything. Screenshots go to
``test-artifacts/console/`` at the repository root, or to the folder named by BINWATCH_TEST_ARTIFACTS, so CI
can keep them.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import REPO

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
DESKTOP = (1280, 900)
PHONE = (390, 844)
HEIGHTS = {DESKTOP[0]: DESKTOP[1], PHONE[0]: PHONE[1]}
CHROME_ARGS = (
    "--headless=new",
    "--no-sandbox",  # the tests run as root in CI, where chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

T = TypeVar("T")


def artifacts_dir() -> Path:
    """Where screenshots go (created): $BINWATCH_TEST_ARTIFACTS, else test-artifacts/console/ in the repo."""
    override = os.environ.get("BINWATCH_TEST_ARTIFACTS")
    folder = Path(override) if override else REPO / "test-artifacts" / "console"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def start_chrome(user_data_dir: Path, log_path: Path | None = None) -> WebDriver:
    """A headless chromium at 1280x900 with a fresh profile in ``user_data_dir``; the caller quits it."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        raise AssertionError(f"{', '.join(missing)} not installed; run `bash scripts/ensure-browser.sh`")
    # Belt and braces: the explicit Service path already skips Selenium Manager; offline, it could not
    # download a browser or driver even if something asked it to.
    os.environ["SE_OFFLINE"] = "true"
    user_data_dir.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (*CHROME_ARGS, f"--user-data-dir={user_data_dir}", f"--window-size={DESKTOP[0]},{DESKTOP[1]}"):
        options.add_argument(arg)
    log_path = log_path or user_data_dir.with_name(user_data_dir.name + "-chromedriver.log")
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(log_path))
    try:
        driver = webdriver.Chrome(service=service, options=options)
    except WebDriverException as exc:
        log = log_path.read_text(errors="replace")[-4000:] if log_path.is_file() else "(no chromedriver log)"
        raise AssertionError(f"chromium did not start: {exc.msg}\n--- chromedriver log\n{log}") from exc
    driver.set_page_load_timeout(60)
    driver.set_window_size(*DESKTOP)
    return driver


# -- waiting -----------------------------------------------------------------------------------------


def wait_for(
    driver: WebDriver, condition: Callable[[WebDriver], T], timeout: float = 20, message: str = ""
) -> T:
    """``condition(driver)`` once it is truthy (WebDriverWait); on timeout an AssertionError that says where
    the browser is and what the page shows."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)
    except TimeoutException:
        raise AssertionError(
            f"timed out after {timeout}s waiting for {message or condition!r}\n{describe_page(driver)}"
        ) from None


def wait_for_path(driver: WebDriver, path: str, timeout: float = 20) -> str:
    """Wait until the URL's path is ``path``; returns the full URL."""
    wait_for(driver, lambda d: current_path(d) == path, timeout, f"the URL path to be {path}")
    return driver.current_url


def wait_for_element(driver: WebDriver, by: str, value: str, timeout: float = 20) -> WebElement:
    """The first visible element matching ``(by, value)``, once there is one."""
    return wait_for(driver, EC.visibility_of_element_located((by, value)), timeout, f"{by}={value!r} visible")


def wait_for_button(driver: WebDriver, name: str, timeout: float = 20, within: str = "") -> WebElement:
    """The clickable button named ``name`` (see :func:`button_xpath`), once there is one."""
    xpath = button_xpath(name, within)
    return wait_for(
        driver, EC.element_to_be_clickable((By.XPATH, xpath)), timeout, f"a button named {name!r}"
    )


# -- reading the page --------------------------------------------------------------------------------


def current_path(driver: WebDriver) -> str:
    return urlsplit(driver.current_url).path


def describe_page(driver: WebDriver) -> str:
    """The URL, title and start of the visible text, for failure messages."""
    try:
        text = driver.find_element(By.TAG_NAME, "body").text
    except WebDriverException:
        text = "(no body)"
    return f"at {driver.current_url} ({driver.title!r}):\n{text[:1500]}"


def xpath_literal(text: str) -> str:
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    return "concat(" + ', "\'", '.join(f"'{part}'" for part in text.split("'")) + ")"


def button_xpath(name: str, within: str = "") -> str:
    """XPath of a button whose name is ``name``: a <button> (or role=button) by its text or aria-label, or an
    <input type=submit|button> by its value or aria-label; ``within`` (an XPath, e.g. ``//nav//form``)
    narrows where to look."""
    n = xpath_literal(name)
    return " | ".join(
        f"{within}//{node}"
        for node in (
            f"button[normalize-space()={n} or normalize-space(@aria-label)={n}]",
            f"*[@role='button'][normalize-space()={n} or normalize-space(@aria-label)={n}]",
            f"input[@type='submit' or @type='button']"
            f"[normalize-space(@value)={n} or normalize-space(@aria-label)={n}]",
        )
    )


def find_buttons(driver: WebDriver, name: str, within: str = "") -> list[WebElement]:
    return driver.find_elements(By.XPATH, button_xpath(name, within))


# -- actions -----------------------------------------------------------------------------------------


def screenshot(driver: WebDriver, name: str, *, full_page: bool = False) -> Path:
    """Save a PNG of the viewport (or, with ``full_page``, the whole page) as ``<name>.png`` in the artifacts
    folder; returns its path."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "screenshot"
    path = artifacts_dir() / f"{safe}.png"
    if full_page:
        shot = driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
        )
        path.write_bytes(base64.b64decode(shot["data"]))
    elif not driver.save_screenshot(str(path)):
        raise AssertionError(f"could not save screenshot {path}")
    return path


def set_width(driver: WebDriver, px: int) -> None:
    """Resize the window so the page's viewport is ``px`` wide: 1280 (desktop, 900 high) or 390 (a phone,
    844 high). Waits until the page reports the new width."""
    if px not in HEIGHTS:
        raise ValueError(f"set_width: use {' or '.join(map(str, HEIGHTS))} px, not {px}")
    driver.set_window_size(px, HEIGHTS[px])
    wait_for(
        driver, lambda d: d.execute_script("return window.innerWidth") == px, 5, f"window.innerWidth == {px}"
    )


def sign_in(driver: WebDriver, base_url: str, key: str, timeout: float = 20) -> None:
    """Sign in to the console with an API key: open /signin, type ``key`` into the input labelled "API key"
    (id ``api_key``), press the "Sign in" button and wait until the browser has left /signin.

    A page that answers with an error (role=alert) fails at once, with its message. Typing into a page
    that the browser was still replacing has been seen to lose the key (the form then stays, empty, on
    /signin): the key is checked in the field before the click, and a form left empty is tried again,
    printed in the test's output, at most twice.
    """
    for attempt in (1, 2, 3):
        driver.get(f"{base_url.rstrip('/')}/signin")
        field = wait_for_element(driver, By.ID, "api_key", timeout)
        label = field.accessible_name or ""
        assert "api key" in label.lower(), f"the #api_key input is labelled {label!r}, not 'API key'"
        field.clear()
        field.send_keys(key)
        wait_for(
            driver,
            lambda d: d.find_element(By.ID, "api_key").get_property("value") == key,
            5,
            "the key typed",
        )
        wait_for_button(driver, "Sign in", timeout).click()
        try:
            wait_for(
                driver, lambda d: current_path(d) != "/signin", timeout / 2, "the browser to leave /signin"
            )
            return
        except AssertionError:
            alerts = driver.find_elements(By.CSS_SELECTOR, "[role=alert]")
            if alerts:
                raise AssertionError(f"sign-in refused: {alerts[0].text}") from None
            print(f"sign_in: attempt {attempt} stayed on an empty /signin form; trying again")
    raise AssertionError(f"could not sign in after 3 attempts:\n{describe_page(driver)}")


def sign_out(driver: WebDriver, timeout: float = 20) -> None:
    """Press the "Sign out" button (in a form in the page's <nav>) and wait for the next page to load."""
    button = wait_for_button(driver, "Sign out", timeout, within="//nav//form")
    button.click()
    wait_for(driver, EC.staleness_of(button), timeout, "the page to change after Sign out")
    wait_for(driver, lambda d: d.execute_script("return document.readyState") == "complete", timeout)


# -- layout and accessibility checks -------------------------------------------------------------------


def horizontal_overflow(driver: WebDriver) -> int:
    """How many CSS pixels the page is wider than the viewport (0 when it fits; assert ``== 0`` at 390 px)."""
    overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    return max(0, int(overflow))


_DESCRIBE_JS = """
const describe = (el) => {
  let s = '<' + el.tagName.toLowerCase();
  for (const attr of ['id', 'name', 'type', 'src', 'class']) {
    const v = el.getAttribute(attr);
    if (v !== null) s += ` ${attr}="${v.length > 80 ? v.slice(0, 77) + '...' : v}"`;
  }
  return s + '>';
};
"""

_IMAGES_WITHOUT_ALT_JS = (
    _DESCRIBE_JS
    + """
return Array.from(document.images)
  .filter((img) => !(img.getAttribute('alt') || '').trim())
  .map(describe);
"""
)

_INPUTS_WITHOUT_LABEL_JS = (
    _DESCRIBE_JS
    + """
const NOT_FIELDS = new Set(['hidden', 'submit', 'button', 'reset', 'image']);
const hasText = (el) => !!el && !!(el.textContent || '').trim();
const visible = (el) => {
  const style = getComputedStyle(el);
  return el.getClientRects().length > 0 && style.visibility !== 'hidden' && style.display !== 'none';
};
const labelled = (el) => {
  if (Array.from(el.labels || []).some(hasText)) return true;  // <label for=...> or a wrapping <label>
  if ((el.getAttribute('aria-label') || '').trim()) return true;
  const ids = (el.getAttribute('aria-labelledby') || '').split(/\\s+/).filter(Boolean);
  return ids.some((id) => hasText(document.getElementById(id)));
};
return Array.from(document.querySelectorAll('input, select, textarea'))
  .filter((el) => !NOT_FIELDS.has(el.type))  // el.type: lower case; 'select-one', 'textarea' for the others
  .filter(visible)
  .filter((el) => !labelled(el))
  .map(describe);
"""
)


def images_without_alt(driver: WebDriver) -> list[str]:
    """Every <img> on the page with no alt text (missing or blank), described as its opening tag."""
    return list(driver.execute_script(_IMAGES_WITHOUT_ALT_JS))


def inputs_without_label(driver: WebDriver) -> list[str]:
    """Every visible input/select/textarea (not type hidden, submit, button, reset or image) with no
    <label for=...>, no wrapping <label>, no aria-label and no aria-labelledby naming text on the page."""
    return list(driver.execute_script(_INPUTS_WITHOUT_LABEL_JS))
