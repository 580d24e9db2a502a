"""The web console in a real browser (Debian's headless chromium), end to end: a real `binwatch serve` API
process and a real worker on Postgres and Redis (the `deployment` fixture), driven through its pages as a
person would. Screenshots land in test-artifacts/console/ (tests/e2e/browser.py).

The tests share one deployment and run in file order: sign in; upload a real ABID photo and see its count;
review mismatches (by mouse and by keyboard) and see the queue shrink; check every page at 1280 px and
390 px; promote a model; submit a training job from the form and cancel it while the worker trains it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from records import model_versions
from records.artifacts import open_artifact_store
from tests.api.support import tiny_checkpoint
from tests.e2e.browser import (
    current_path,
    horizontal_overflow,
    images_without_alt,
    inputs_without_label,
    screenshot,
    set_width,
    sign_in,
    sign_out,
    wait_for,
    wait_for_button,
    wait_for_element,
    wait_for_path,
)
from tests.e2e.conftest import Deployment, create_key

pytestmark = pytest.mark.slow

ABID = Path(__file__).resolve().parents[3] / "shared" / "abid"
FLAGGED = ("00001", "00003", "00004", "00005")


@pytest.fixture(scope="module")
def admin_key(deployment: Deployment) -> str:
    return create_key(deployment.jobs, ["admin"])


@pytest.fixture(scope="module")
def flagged(deployment: Deployment, admin_key: str) -> list[int]:
    """One check per photo, judged against the count the serving model finds least likely (so each is a
    mismatch or uncertain whatever the tiny model's weights): the queue the operator works through."""
    out = []
    with httpx.Client(base_url=deployment.api.url, headers={"X-API-Key": admin_key}, timeout=60) as api:
        for bin_id in FLAGGED:
            data = (ABID / "bin-images" / f"{bin_id}.jpg").read_bytes()
            files = {"images": (f"{bin_id}.jpg", data, "image/jpeg")}
            probs = api.post("/v1/predictions", files=files).json()["predictions"][0]["probabilities"]
            least = int(min(probs, key=probs.get).rstrip("+"))
            metadata = (ABID / "metadata" / f"{bin_id}.json").read_text()
            # The bin's record comes from its ABID metadata (items shown on the bin page), with the count
            # set to the unlikely one.
            body = {**json.loads(metadata), "EXPECTED_QUANTITY": least}
            assert api.put(f"/v1/bins/{bin_id}", json=body).is_success
            check = api.post(f"/v1/bins/{bin_id}/checks", files={"image": files["images"]})
            assert check.status_code == 201, check.text
            assert check.json()["verdict"] in ("mismatch", "uncertain")
            out.append(check.json()["id"])
    return out


def _accessible(driver: WebDriver, page: str) -> None:
    assert images_without_alt(driver) == [], page
    assert inputs_without_label(driver) == [], page


def _live_text(driver: WebDriver, element_id: str) -> str:
    # The job page swaps its live region when the job changes; an element read mid-swap is stale.
    try:
        return driver.find_element(By.ID, element_id).text
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def _click_live_button(driver: WebDriver, name: str) -> None:
    for _ in range(5):
        try:
            wait_for_button(driver, name).click()
            return
        except StaleElementReferenceException:
            continue
    raise AssertionError(f"the button {name!r} kept being replaced")


def _waiting(driver: WebDriver) -> int:
    return int(wait_for_element(driver, By.ID, "waiting").text)


def test_sign_in_and_out(deployment: Deployment, browser: WebDriver, admin_key: str) -> None:
    url = deployment.api.url
    browser.get(f"{url}/queue")
    wait_for_path(browser, "/signin")
    _accessible(browser, "signin")
    screenshot(browser, "signin")

    browser.find_element(By.ID, "api_key").send_keys(admin_key)
    wait_for_button(browser, "Sign in").click()
    # Back where the visitor was going before signing in.
    wait_for_path(browser, "/queue")
    sign_out(browser)
    wait_for_path(browser, "/signin")
    browser.get(f"{url}/")
    wait_for_path(browser, "/signin")
    sign_in(browser, url, admin_key)
    assert current_path(browser) == "/"
    wait_for_button(browser, "Sign out", within="//nav//form")


def test_upload_a_real_photo_and_see_its_count(deployment: Deployment, browser: WebDriver) -> None:
    browser.get(f"{deployment.api.url}/upload")
    photo = ABID / "bin-images" / "00011.jpg"
    browser.find_element(By.ID, "count-photos").send_keys(str(photo))
    wait_for_button(browser, "Count").click()
    result = wait_for_element(browser, By.CSS_SELECTOR, ".result")
    assert "00011.jpg" in result.text
    count = result.find_element(By.CSS_SELECTOR, ".count").text
    # The count the API gives for the same photo, from the same model.
    with httpx.Client(base_url=deployment.api.url, timeout=60) as api:
        answer = api.post(
            "/v1/predictions",
            files={"images": ("00011.jpg", photo.read_bytes(), "image/jpeg")},
            headers={"X-API-Key": deployment.key},
        ).json()["predictions"][0]
    assert count == answer["label"]
    bars = result.find_elements(By.CSS_SELECTOR, "progress")
    assert len(bars) == len(answer["probabilities"])
    _accessible(browser, "upload")
    screenshot(browser, "upload", full_page=True)


def test_review_mismatches_and_see_the_queue_shrink(
    deployment: Deployment, browser: WebDriver, flagged: list[int]
) -> None:
    url = deployment.api.url
    browser.get(f"{url}/queue")
    waiting = _waiting(browser)
    assert waiting == len(flagged)
    cards = browser.find_elements(By.CSS_SELECTOR, "li.check")
    assert [int(c.get_attribute("data-check-id")) for c in cards] == sorted(flagged, reverse=True)
    _accessible(browser, "queue")
    screenshot(browser, "queue", full_page=True)

    # By mouse: open the newest, say the count is 2 and correct the bin's record.
    newest = max(flagged)
    browser.find_element(By.LINK_TEXT, f"Review check {newest}").click()
    wait_for_path(browser, f"/checks/{newest}")
    _accessible(browser, "check")
    screenshot(browser, "review", full_page=True)
    browser.find_element(By.CSS_SELECTOR, "label[for=o-counted]").click()
    count = browser.find_element(By.ID, "seen_count")
    count.clear()
    count.send_keys("2")
    browser.find_element(By.CSS_SELECTOR, "label[for=correct_record]").click()
    wait_for_button(browser, "Save review").click()
    # The next check waiting opens, saying the last one was saved.
    following = sorted(flagged, reverse=True)[1]
    wait_for_path(browser, f"/checks/{following}")
    assert f"Check {newest} reviewed" in browser.find_element(By.CSS_SELECTOR, "[role=status]").text

    # By keyboard only: Tab to the choices, arrows to pick "unusable", Enter to save.
    body = browser.find_element(By.TAG_NAME, "body")
    body.click()
    for _ in range(80):
        active = browser.switch_to.active_element
        if active.get_attribute("id") == "o-confirmed":
            break
        active.send_keys(Keys.TAB)
    else:
        raise AssertionError("Tab never reached the review's choices")
    active.send_keys(Keys.ARROW_DOWN)  # counted
    browser.switch_to.active_element.send_keys(Keys.ARROW_DOWN)  # unusable
    assert browser.find_element(By.ID, "o-unusable").is_selected()
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    wait_for(browser, lambda d: current_path(d) != f"/checks/{following}", message="the review to be saved")

    browser.get(f"{url}/queue")
    assert _waiting(browser) == waiting - 2
    shown = [
        int(c.get_attribute("data-check-id")) for c in browser.find_elements(By.CSS_SELECTOR, "li.check")
    ]
    assert newest not in shown and following not in shown

    # Stored: the JSON API shows both reviews, who made them, and the corrected record.
    with httpx.Client(base_url=url, headers={"X-API-Key": create_key(deployment.jobs, ["inventory"])}) as api:
        reviewed = {c["id"]: c for c in api.get("/v1/review-queue?reviewed=yes").json()["items"]}
        assert reviewed[newest]["review"]["seen_count"] == 2
        assert reviewed[newest]["review"]["corrected_record"] is True
        assert reviewed[following]["review"]["outcome"] == "unusable"
        assert reviewed[newest]["review"]["reviewer"].startswith("api-key:e2e")
        record = api.get(f"/v1/bins/{reviewed[newest]['bin_id']}").json()
        assert record["expected_count"] == 2 and record["source"] == "review"

    # The bin page shows its record, its ABID items and its history, the reviewed check marked.
    browser.get(f"{url}/bins/{reviewed[following]['bin_id']}")
    history = wait_for_element(browser, By.ID, "history-h").find_element(By.XPATH, "..")
    assert "reviewed: unusable photo" in history.text
    assert browser.find_elements(By.CSS_SELECTOR, "img.thumb")
    _accessible(browser, "bin")
    screenshot(browser, "bin", full_page=True)


def test_every_page_fits_a_phone_and_a_desktop(
    deployment: Deployment, browser: WebDriver, flagged: list[int]
) -> None:
    url = deployment.api.url
    pages = ["/", "/queue", f"/checks/{min(flagged)}", f"/bins/{FLAGGED[0]}", "/upload", "/models", "/jobs"]
    pages.append(f"/models/{deployment.baseline_id}")
    try:
        for width in (1280, 390):
            set_width(browser, width)
            for path in pages:
                browser.get(url + path)
                wait_for_element(browser, By.TAG_NAME, "h1")
                assert horizontal_overflow(browser) == 0, (width, path)
                _accessible(browser, path)
                if width == 390 and path in ("/", "/queue", f"/checks/{min(flagged)}"):
                    name = {"/": "phone-overview", "/queue": "phone-queue"}.get(path, "phone-review")
                    screenshot(browser, name)
        set_width(browser, 1280)
        browser.get(url + "/")
        screenshot(browser, "overview", full_page=True)
    finally:
        set_width(browser, 1280)


def test_promote_a_model(deployment: Deployment, browser: WebDriver, tmp_path: Path) -> None:
    helper = deployment.jobs
    checkpoint = tiny_checkpoint(tmp_path / "checkpoints", 12)
    store = open_artifact_store(helper.settings.resolved_artifact_store)
    with helper.sessions() as session:
        version, _ = model_versions.register_checkpoint(
            session, store, checkpoint, model_versions.read_checkpoint_metadata(checkpoint), name="candidate"
        )
        session.commit()
        candidate = version.id
    browser.get(f"{deployment.api.url}/models")
    row = wait_for_element(browser, By.CSS_SELECTOR, f"tr[data-model-id='{candidate}']")
    assert "registered" not in row.text or row.find_elements(By.TAG_NAME, "button")
    screenshot(browser, "models")
    row.find_element(By.CSS_SELECTOR, f"button[aria-label='Promote version {candidate}']").click()
    wait_for(browser, lambda d: "is now serving" in d.page_source, message="the promotion")
    row = browser.find_element(By.CSS_SELECTOR, f"tr[data-model-id='{candidate}']")
    assert "active" in row.text
    with httpx.Client(base_url=deployment.api.url, headers={"X-API-Key": deployment.key}) as api:
        versions = api.get("/v1/models").json()["items"]
        assert [v["id"] for v in versions if v["is_active"]] == [candidate]
    browser.get(f"{deployment.api.url}/models/{deployment.baseline_id}")
    wait_for_element(browser, By.ID, "fig-h")
    _accessible(browser, "model")
    screenshot(browser, "model", full_page=True)


def test_submit_a_training_job_watch_it_and_cancel_it(deployment: Deployment, browser: WebDriver) -> None:
    url = deployment.api.url
    browser.get(f"{url}/jobs")
    uri = browser.find_element(By.ID, "j-uri")
    uri.clear()
    uri.send_keys(str(ABID))
    browser.find_element(By.ID, "j-limit").send_keys("400")
    browser.find_element(By.ID, "j-epochs").send_keys("30")
    recipe = browser.find_element(By.ID, "j-recipe")
    recipe.find_element(By.CSS_SELECTOR, "option[value=smoke]").click()
    _accessible(browser, "jobs")
    screenshot(browser, "jobs", full_page=True)
    wait_for_button(browser, "Submit training job").click()
    wait_for(browser, lambda d: re.fullmatch(r"/jobs/[0-9a-f]{32}", current_path(d)), message="the job page")
    job_id = current_path(browser).rsplit("/", 1)[1]
    # The page updates by itself: no reload until the worker has finished an epoch.
    wait_for(
        browser,
        lambda d: (
            "running" in d.find_element(By.ID, "job-status").text
            and "No finished epoch yet" not in d.page_source
        ),
        timeout=180,
        message="the job to run and finish an epoch",
    )
    _accessible(browser, "job")
    screenshot(browser, "job", full_page=True)
    _click_live_button(browser, "Cancel job")
    wait_for(
        browser,
        lambda d: _live_text(d, "job-status").startswith("cancelled"),
        timeout=60,
        message="the job to be cancelled",
    )
    with httpx.Client(base_url=url, headers={"X-API-Key": deployment.key}) as api:
        job = api.get(f"/v1/training-jobs/{job_id}").json()
    assert job["status"] == "cancelled" and job["model_version_id"] is None
    # The curve drew: an SVG image of the epochs so far, loaded by the browser.
    curve = browser.find_element(By.ID, "curves")
    assert int(curve.get_attribute("naturalWidth") or 0) > 0
