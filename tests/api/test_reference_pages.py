"""No page of the origin loads anything from another host: the API reference and the console (issue 24)."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable

from tests.api.conftest import Service

# Any attribute or CSS url() that names a host: http(s)://…, or a protocol-relative //host/….
ELSEWHERE = re.compile(
    r"""(?:src|href|action)\s*=\s*["']?\s*(?:[a-z]+:)?//|url\(\s*["']?\s*(?:[a-z]+:)?//""", re.I
)


def test_the_reference_pages_are_served_from_the_deployment_under_a_csp(
    make_service: Callable[..., Service],
) -> None:
    c = make_service().client
    for path, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        page = c.get(path)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert not ELSEWHERE.search(page.text), path
        assert f'src="/reference-assets/{asset}"' in page.text
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "connect-src 'self'" in policy and "http" not in policy
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
        # The one inline script Swagger UI needs is allowed by its hash, and by nothing looser.
        for body in re.findall(r"<script>(.*?)</script>", page.text, re.S):
            digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
            assert f"'sha256-{digest}'" in policy
        assert "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
        served = c.get(f"/reference-assets/{asset}")
        assert served.status_code == 200 and len(served.content) > 100_000
    assert c.get("/openapi.json").status_code == 200


def test_no_console_page_references_another_host(make_service: Callable[..., Service]) -> None:
    svc = make_service()
    c = svc.client
    form = c.get("/signin")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert csrf is not None
    signed = c.post("/signin", data={"api_key": svc.admin_key, "csrf_token": csrf.group(1), "next": "/"})
    assert signed.status_code == 200
    for path in ("/", "/queue", "/upload", "/models", "/jobs", "/static/console.css", "/signin"):
        answer = c.get(path)
        assert answer.status_code == 200, path
        assert not ELSEWHERE.search(answer.text), (path, ELSEWHERE.search(answer.text))
