"""The console's pages and forms, server side: sign-in, every page rendered, the review flow, upload,
promotion and jobs, over the real app (SQLite embedded default, a real tiny model, real ABID photos)."""

from __future__ import annotations

import re
from html import unescape

import pytest

from tests.api.console.conftest import ABID, Console, csrf_of, photo

pytestmark = pytest.mark.slow


def test_sign_in_sets_an_http_only_same_site_cookie_and_sign_out_ends_it(console: Console) -> None:
    client = console.anonymous().client
    form = client.get("/signin")
    answer = client.post(
        "/signin",
        data={"api_key": console.service.admin_key, "csrf_token": csrf_of(form.text), "next": "/queue"},
        follow_redirects=False,
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/queue"
    cookie = next(h for h in answer.headers.get_list("set-cookie") if h.startswith("binwatch_session="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert console.service.admin_key not in cookie  # only a random token, never the key
    token = cookie.split(";")[0].split("=", 1)[1]
    page = client.get("/")
    assert page.status_code == 200 and "Sign out" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert page.headers["cache-control"] == "no-store"
    out = client.post("/signout", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/signin"
    # The old token is dead on the server, not only forgotten by this browser.
    replay = console.anonymous().client
    replay.cookies.set("binwatch_session", token)
    assert replay.get("/", follow_redirects=False).headers["location"] == "/signin"


def test_a_wrong_key_or_a_sign_in_form_from_elsewhere_is_refused(console: Console) -> None:
    client = console.anonymous().client
    form = client.get("/signin")
    wrong = client.post("/signin", data={"api_key": "bw_not-a-key", "csrf_token": csrf_of(form.text)})
    assert wrong.status_code == 401 and "not valid or has been revoked" in wrong.text
    # Login CSRF: a form posted without the sign-in cookie's token signs nobody in.
    stranger = console.anonymous().client
    forged = stranger.post(
        "/signin", data={"api_key": console.service.admin_key, "csrf_token": "x" * 43}, follow_redirects=False
    )
    assert forged.status_code == 403 and "binwatch_session" not in forged.headers.get("set-cookie", "")
    assert stranger.get("/", follow_redirects=False).status_code == 303


def test_next_after_sign_in_stays_on_this_site(console: Console) -> None:
    client = console.anonymous().client
    redirect = client.get("/queue?verdict=mismatch", follow_redirects=False)
    assert redirect.headers["location"] == "/signin?next=/queue%3Fverdict%3Dmismatch"
    for hostile in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        form = client.get("/signin")
        answer = client.post(
            "/signin",
            data={"api_key": console.service.admin_key, "csrf_token": csrf_of(form.text), "next": hostile},
            follow_redirects=False,
        )
        assert answer.headers["location"] == "/"
        client.cookies.clear()


def test_every_page_renders_for_an_admin(console: Console) -> None:
    admin = console.browser("admin")
    check_id = console.check_ids[0]
    pages = {
        "/": ["Bins by last verdict", "Checks per day", "Serving model"],
        "/queue": [f"Review check {check_id}", "<progress"],
        f"/checks/{check_id}": [
            "What do you see in the photo?",
            'for="seen_count"',
            "<dt>Risk</dt><dd>at this setting ",
            "its likelier neighbour",
        ],
        "/bins/00001": ["Check history", "Items"],
        "/upload": ["Count objects", "Check a bin against its record"],
        "/models": ["Model versions", "active"],
        "/models/1": [
            "Validation figures",
            "Promotions",
            "Checks judged by this version read the neighbour ratio",
            "Off-by-one caught",
        ],
        "/jobs": ["Train a new model", "Training jobs", "Tuning jobs"],
    }
    for path, expected in pages.items():
        answer = admin.get(path)
        assert answer.status_code == 200, (path, answer.text[:500])
        for text in expected:
            assert text in answer.text, (path, text)
    photo_answer = admin.get(f"/checks/{check_id}/photo")
    assert photo_answer.status_code == 200 and photo_answer.content[:2] == b"\xff\xd8"
    assert photo_answer.headers["content-security-policy"] == "default-src 'none'; sandbox"
    # Not kept by a shared browser after sign-out, like the pages themselves.
    assert photo_answer.headers["cache-control"] == "no-store"
    plot_answer = admin.get("/models/1/plots/confusion_matrix")
    assert plot_answer.status_code == 200 and plot_answer.headers["cache-control"] == "no-store"
    assert admin.get("/static/console.css").status_code == 200


def _waiting(html: str) -> int:
    found = re.search(r'<span id="waiting">(\d+)</span>', html)
    assert found
    return int(found.group(1))


def test_review_a_mismatch_and_the_queue_shrinks(console: Console) -> None:
    operator = console.browser("inventory")
    before = _waiting(operator.get("/queue").text)
    assert before == len(console.check_ids)
    first, second, third = console.check_ids[-1], console.check_ids[-2], console.check_ids[-3]
    # Confirm the record: the next waiting check opens.
    confirmed = operator.post(f"/checks/{first}/review", {"outcome": "confirmed", "then": "next"})
    assert confirmed.status_code == 303 and confirmed.headers["location"] == f"/checks/{second}?done={first}"
    # Count it differently and correct the bin's record in the same step.
    counted = operator.post(
        f"/checks/{second}/review", {"outcome": "counted", "seen_count": "7", "correct_record": "on"}
    )
    assert counted.status_code == 303
    unusable = operator.post(f"/checks/{third}/review", {"outcome": "unusable"})
    assert unusable.status_code == 303 and unusable.headers["location"].startswith("/queue?done=")
    after = operator.get("/queue")
    assert _waiting(after.text) == before - 3
    assert f"Review check {first}<" not in after.text
    reviewed = operator.get("/queue?reviewed=yes").text
    assert f"Review check {second}<" in reviewed and "reviewed: counted 7" in reviewed
    # Stored: who, when, what; the record corrected; the JSON API shows the same review.
    api = console.service.client
    shown = api.get("/v1/review-queue?reviewed=yes", headers=console.service.headers()).json()["items"]
    by_id = {c["id"]: c["review"] for c in shown}
    assert by_id[first]["outcome"] == "confirmed" and by_id[first]["reviewer"].startswith("api-key:inventory")
    assert by_id[second]["seen_count"] == 7 and by_id[second]["corrected_record"] is True
    assert by_id[third]["outcome"] == "unusable" and by_id[third]["seen_count"] is None
    corrected_bin = next(c["bin_id"] for c in shown if c["id"] == second)
    record = api.get(f"/v1/bins/{corrected_bin}", headers=console.service.headers()).json()
    assert record["expected_count"] == 7 and record["source"] == "review"
    page = operator.get(f"/checks/{second}").text
    assert "corrected from" in page and "reviewed: counted 7" in page


def test_an_inconsistent_review_says_what_to_fix_and_stores_nothing(console: Console) -> None:
    operator = console.browser("inventory")
    check_id = console.check_ids[0]
    for form, message in (
        ({}, "Choose what you see"),
        ({"outcome": "counted", "seen_count": ""}, "needs seen_count"),
        ({"outcome": "counted", "seen_count": "-3"}, "whole number"),
        ({"outcome": "counted", "seen_count": "abc"}, "whole number"),
        ({"outcome": "sideways"}, "Input should be"),
    ):
        answer = operator.post(f"/checks/{check_id}/review", form)
        assert answer.status_code == 422 and message in answer.text, (form, answer.text[-2000:])
    assert _waiting(operator.get("/queue").text) == len(console.check_ids)


def test_upload_counts_a_real_photo_and_checks_a_bin(console: Console) -> None:
    admin = console.browser("admin")
    counted = admin.post("/upload/count", files=[("images", ("00001.jpg", photo("00001"), "image/jpeg"))])
    assert counted.status_code == 200, counted.text[-2000:]
    assert "<strong>00001.jpg</strong>" in counted.text and "data:image/jpeg;base64," in counted.text
    corrupt = admin.post("/upload/count", files=[("images", ("x.jpg", b"\xff\xd8 not a jpeg", "image/jpeg"))])
    assert corrupt.status_code in (415, 422) and 'role="alert"' in corrupt.text
    checked = admin.post(
        "/upload/check", {"bin_id": "00003"}, files=[("image", ("00003.jpg", photo("00003"), "image/jpeg"))]
    )
    assert checked.status_code == 303 and re.fullmatch(r"/checks/\d+", checked.headers["location"])
    unknown = admin.post(
        "/upload/check", {"bin_id": "nope-404"}, files=[("image", ("a.jpg", photo("00003"), "image/jpeg"))]
    )
    assert unknown.status_code == 404 and "has no record" in unknown.text


def test_promote_from_the_models_page(console: Console) -> None:
    service = console.service
    admin = console.browser("admin")
    spare = console.spare_id
    page = admin.get("/models").text
    assert f'aria-label="Promote version {spare}"' in page
    answer = admin.post(f"/models/{spare}/promote", {"reason": "looks better on our bins"})
    assert answer.status_code == 303 and answer.headers["location"] == f"/models?promoted={spare}"
    versions = service.client.get("/v1/models", headers=service.headers()).json()["items"]
    assert [v["id"] for v in versions if v["is_active"]] == [spare]
    assert "looks better on our bins" in admin.get(f"/models/{spare}").text
    assert "is now serving" in admin.get(f"/models?promoted={spare}").text


def test_submit_and_cancel_a_training_job(console: Console) -> None:
    trainer = console.browser("train")
    bad = trainer.post("/jobs", {"uri": "", "recipe": "cpu-quick"})
    assert bad.status_code == 422 and 'role="alert"' in bad.text
    submitted = trainer.post("/jobs", {"uri": str(ABID), "limit": "40", "recipe": "smoke"})
    assert submitted.status_code == 303, submitted.text[-2000:]
    job_path = submitted.headers["location"]
    page = trainer.get(job_path)
    assert page.status_code == 200 and "Cancel job" in page.text
    cancelled = trainer.post(job_path + "/cancel")
    assert cancelled.status_code == 303
    job_id = job_path.rsplit("/", 1)[1]
    service = console.service
    status = service.client.get(f"/v1/training-jobs/{job_id}", headers=service.headers()).json()
    # No worker runs here: the job was still queued, so it is cancelled at once.
    assert status["status"] == "cancelled"
    # The form's "add reviewed photos" box: a job on reviews alone (no ABID folder).
    on_reviews = trainer.post("/jobs", {"uri": "", "reviews": "on", "recipe": "smoke"})
    assert on_reviews.status_code == 303, on_reviews.text[-2000:]
    reviews_job = on_reviews.headers["location"].rsplit("/", 1)[1]
    answer = service.client.get(f"/v1/training-jobs/{reviews_job}", headers=service.headers())
    dataset = answer.json()["dataset"]
    assert "uri" not in dataset and "reviewed_before" in dataset["reviews"]
    curves = trainer.get(job_path + "/curves.svg")
    assert curves.status_code == 200 and curves.text.startswith("<svg")


def test_bad_form_values_are_refused_on_the_page_not_with_a_500(console: Console) -> None:
    admin = console.browser("admin")
    check_id = console.check_ids[0]
    # A reason with a control character cannot be stored: the page says so, nothing is promoted.
    refused = admin.post(f"/models/{console.spare_id}/promote", {"reason": "ok\x01"})
    assert refused.status_code == 422 and "the reason cannot be stored" in refused.text
    # Digits that are not ASCII, and numbers too long for int(): refused by name.
    for value in ("²", "9" * 5000):
        answer = admin.post("/jobs", {"uri": str(ABID), "limit": value, "recipe": "smoke"})
        assert answer.status_code == 422 and "dataset.limit" in answer.text, value
        answer = admin.post(f"/checks/{check_id}/review", {"outcome": "counted", "seen_count": value})
        assert answer.status_code == 422 and "whole number" in answer.text, value
    # Correcting the record needs a count of its own: refused as over JSON, not silently dropped.
    answer = admin.post(f"/checks/{check_id}/review", {"outcome": "confirmed", "correct_record": "on"})
    assert answer.status_code == 422 and "correct_record needs outcome" in unescape(answer.text)


def test_signing_in_over_a_session_ends_the_old_one(console: Console) -> None:
    service = console.service
    old = console.browser("inventory").client.cookies.get("binwatch_session")
    # A browser that still holds that session (another tab) signs in with another key.
    client = console.anonymous().client
    form = client.get("/signin")
    client.cookies.set("binwatch_session", old)
    key = service.create_key("predict", name="next-user")
    answer = client.post(
        "/signin", data={"api_key": key, "csrf_token": csrf_of(form.text)}, follow_redirects=False
    )
    assert answer.status_code == 303
    new = next(h for h in answer.headers.get_list("set-cookie") if h.startswith("binwatch_session="))
    assert old not in new
    copy = console.anonymous().client
    copy.cookies.set("binwatch_session", old)
    assert copy.get("/", follow_redirects=False).headers["location"] == "/signin"
