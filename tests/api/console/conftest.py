"""Fixtures for the console's server-side tests: the app in-process (TestClient, full lifespan) with a real
tiny model, bins checked with real ABID photos, and browsers as cookie jars signed in with keys of each
scope. The browser itself (Chromium) is in tests/e2e/test_console_browser.py."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import Service

ABID = Path(__file__).resolve().parents[4] / "shared" / "abid"
PHOTO_IDS = ("00001", "00003", "00004", "00005", "00006")


def photo(bin_id: str) -> bytes:
    return (ABID / "bin-images" / f"{bin_id}.jpg").read_bytes()


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page has no CSRF field"
    return found.group(1)


@dataclass
class Browser:
    """A cookie jar on the app: what a browser keeps between requests."""

    client: TestClient
    csrf: str = ""
    pages: dict[str, str] = field(default_factory=dict)

    def get(self, path: str, **kw: object):  # noqa: ANN201 - httpx.Response
        return self.client.get(path, follow_redirects=False, **kw)

    def post(self, path: str, data: dict[str, str] | None = None, *, csrf: str | None = None, **kw: object):  # noqa: ANN201
        form = dict(data or {})
        token = self.csrf if csrf is None else csrf
        if token:
            form["csrf_token"] = token
        return self.client.post(path, data=form, follow_redirects=False, **kw)


def sign_in(client: TestClient, key: str) -> Browser:
    form = client.get("/signin")
    assert form.status_code == 200, form.text
    answer = client.post(
        "/signin",
        data={"api_key": key, "csrf_token": csrf_of(form.text), "next": "/"},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    browser = Browser(client)
    overview = browser.get("/")
    assert overview.status_code == 200, overview.text
    browser.csrf = csrf_of(overview.text)
    return browser


@dataclass
class Console:
    service: Service
    check_ids: list[int]
    # A registered version that is not active (another real checkpoint), for promotion.
    spare_id: int

    def browser(self, *scopes: str) -> Browser:
        key = self.service.create_key(*scopes, name="-".join(scopes))
        return sign_in(TestClient(self.service.client.app), key)

    def anonymous(self) -> Browser:
        return Browser(TestClient(self.service.client.app))


def flagged_checks(service: Service, ids: tuple[str, ...] = PHOTO_IDS) -> list[int]:
    """One check per photo, each judged against the count the model finds least likely (so the verdict is
    mismatch or uncertain whatever the tiny model's weights)."""
    headers = service.headers()
    out = []
    for bin_id in ids:
        data = photo(bin_id)
        probs = service.client.post(
            "/v1/predictions", files={"images": (f"{bin_id}.jpg", data, "image/jpeg")}, headers=headers
        ).json()["predictions"][0]["probabilities"]
        least = min(probs, key=probs.get).rstrip("+")
        assert service.client.put(
            f"/v1/bins/{bin_id}", json={"expected_count": int(least)}, headers=headers
        ).is_success
        check = service.client.post(
            f"/v1/bins/{bin_id}/checks",
            files={"image": (f"{bin_id}.jpg", data, "image/jpeg")},
            headers=headers,
        )
        assert check.status_code == 201, check.text
        assert check.json()["verdict"] in ("mismatch", "uncertain")
        out.append(check.json()["id"])
    return out


@pytest.fixture
def console(service: Service, checkpoints: tuple[Path, Path]) -> Console:
    spare = service.register(checkpoints[1], promote=False, name="spare")
    return Console(service, flagged_checks(service), spare.id)
