"""Who may see and do what in the console: anonymous visitors see only the sign-in page; every page and
form refuses a key without its scope; every form refuses a missing or forged CSRF token and changes
nothing; a revoked key's session ends at its next request."""

from __future__ import annotations

from html import unescape

import pytest
from fastapi.testclient import TestClient

from records import apikeys
from records.db import make_engine, make_session_factory, session_scope
from tests.api.console.conftest import Console, photo, sign_in

pytestmark = pytest.mark.slow

JOB = "0" * 32
# (path, the scope it needs; None: any signed-in key)
PAGES = [
    ("/", None),
    ("/upload", None),
    ("/models", None),
    ("/models/1", None),
    ("/models/1/plots/training_curves", None),
    ("/queue", "inventory"),
    ("/checks/{check}", "inventory"),
    ("/checks/{check}/photo", "inventory"),
    ("/bins/00001", "inventory"),
    ("/bins?id=00001", "inventory"),
    ("/jobs", "train"),
    (f"/jobs/{JOB}", "train"),
    (f"/jobs/{JOB}/curves.svg", "train"),
    (f"/tuning/{JOB}", "train"),
    (f"/tuning/{JOB}/pictures/optimization_history.png", "train"),
]
# (path, form fields, the scope it needs)
FORMS = [
    ("/checks/{check}/review", {"outcome": "confirmed"}, "inventory"),
    ("/upload/check", {"bin_id": "00001"}, "inventory"),
    ("/upload/count", {}, "predict"),
    ("/models/1/promote", {"reason": "x"}, "admin"),
    ("/jobs", {"uri": "/nowhere", "recipe": "smoke"}, "train"),
    (f"/jobs/{JOB}/cancel", {}, "train"),
    (f"/tuning/{JOB}/cancel", {}, "train"),
]
SCOPES = ("predict", "inventory", "train")


def _files(path: str) -> list | None:
    if path == "/upload/check":
        return [("image", ("00001.jpg", photo("00001"), "image/jpeg"))]
    if path == "/upload/count":
        return [("images", ("00001.jpg", photo("00001"), "image/jpeg"))]
    return None


def test_an_anonymous_visitor_sees_only_the_sign_in_page(console: Console) -> None:
    visitor = console.anonymous()
    check = console.check_ids[0]
    for path, _scope in PAGES:
        answer = visitor.get(path.format(check=check))
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/signin"), path
    for path, form, _scope in FORMS + [("/signout", {}, None)]:
        answer = visitor.post(path.format(check=check), form, csrf="anything", files=_files(path))
        assert answer.status_code == 303 and answer.headers["location"].startswith("/signin"), path
    signin = visitor.get("/signin")
    assert signin.status_code == 200 and 'for="api_key"' in signin.text and "<nav" not in signin.text
    # The JSON API's own rules are unchanged: no cookie ever authenticates /v1.
    assert visitor.get("/v1/models").status_code == 401


@pytest.mark.parametrize("scope", SCOPES + ("admin",))
def test_every_page_and_form_refuses_a_key_without_its_scope(console: Console, scope: str) -> None:
    browser = console.browser(scope)
    check = console.check_ids[0]
    allowed = {scope, None} | ({"predict", "inventory", "train", "admin"} if scope == "admin" else set())
    for path, needed in PAGES:
        answer = browser.get(path.format(check=check))
        if needed in allowed:
            assert answer.status_code in (200, 303, 404), (scope, path, answer.status_code)
        else:
            assert answer.status_code == 403, (scope, path, answer.status_code)
            assert f"needs '{needed}'" in unescape(answer.text)
    queue_before = _unreviewed(console)
    for path, form, needed in FORMS:
        answer = browser.post(path.format(check=check), form, files=_files(path))
        if needed in allowed:
            assert answer.status_code != 403, (scope, path, answer.text[-600:])
        else:
            assert answer.status_code == 403, (scope, path, answer.status_code)
            assert f"needs '{needed}'" in unescape(answer.text)
    if "inventory" not in allowed:
        assert _unreviewed(console) == queue_before
    # What a page offers follows the scopes too: the navigation, and the promote button for admins only.
    overview = browser.get("/").text
    assert ('href="/queue"' in overview) == ("inventory" in allowed)
    assert ('href="/jobs"' in overview) == ("train" in allowed)
    assert ("Promote version" in browser.get("/models").text) == (scope == "admin")


def _unreviewed(console: Console) -> int:
    service = console.service
    return len(service.client.get("/v1/review-queue", headers=service.headers()).json()["items"])


@pytest.mark.parametrize("token", ["", "forged-token-of-the-right-length-xxxxxxxxxxx"])
def test_every_form_refuses_a_missing_or_forged_csrf_token(console: Console, token: str) -> None:
    admin = console.browser("admin")
    check = console.check_ids[0]
    service = console.service
    before_queue = _unreviewed(console)
    before_jobs = service.client.get("/v1/training-jobs", headers=service.headers()).json()["items"]
    before_models = service.client.get("/v1/models", headers=service.headers()).json()["items"]
    for path, form, _scope in FORMS + [("/signout", {}, None)]:
        answer = admin.post(path.format(check=check), form, csrf=token, files=_files(path))
        assert answer.status_code == 403, (path, answer.status_code)
        assert "security token" in answer.text, path
    assert _unreviewed(console) == before_queue
    assert service.client.get("/v1/training-jobs", headers=service.headers()).json()["items"] == before_jobs
    assert service.client.get("/v1/models", headers=service.headers()).json()["items"] == before_models
    # Still signed in: the refused sign-out changed nothing either.
    assert admin.get("/").status_code == 200


def test_a_revoked_key_is_signed_out_at_its_next_request(console: Console) -> None:
    service = console.service
    key = service.create_key("inventory", name="leaving")

    browser = sign_in(TestClient(service.client.app), key)
    assert browser.get("/queue").status_code == 200
    engine = make_engine(service.settings.resolved_database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            apikeys.revoke_api_key(session, key[:11])
    finally:
        engine.dispose()
    answer = browser.get("/queue")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/signin")
