"""Bad input over real HTTP (`binwatch serve` under uvicorn): each row is an input, the status it must get
and a fragment of the problem's detail. None may be a 500; every error is application/problem+json.

The 1x1 image is rejected (422, "too small"): BINWATCH_MIN_IMAGE_SIDE (32 px) is the smallest side a bin
photo can have and still show anything countable; the model would otherwise answer confidently about
a single pixel.
"""

from __future__ import annotations

import io
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.api.support import Server, clean_env, encode, originals, png_bomb, run_cli, start_server

pytestmark = pytest.mark.slow

UPLOAD_LIMIT = 1_000_000
JSON_LIMIT = 64 * 1024


@dataclass
class Keys:
    admin: str
    predict: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, checkpoints: tuple[Path, Path]) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("bad-inputs")
    env = clean_env(
        BINWATCH_HOME=str(home / "home"),
        BINWATCH_MAX_UPLOAD_BYTES=str(UPLOAD_LIMIT),
        BINWATCH_MAX_JSON_BYTES=str(JSON_LIMIT),
        BINWATCH_DEVICE="cpu",
    )
    run_cli("models", "register", str(checkpoints[0]), "--promote", env=env)
    srv = start_server(env, home)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def keys(server: Server) -> Keys:
    match = re.search(r"^\s+(bw_[A-Za-z0-9_-]{32})$", server.log(), re.MULTILINE)
    assert match, f"the first start prints the admin key:\n{server.log()}"
    predict = run_cli("apikeys", "create", "--name", "camera", "--scope", "predict", env=server.env)
    keys = Keys(admin=match.group(1), predict=predict.stdout.strip())
    with server.client(keys.admin) as client:
        assert client.put("/v1/bins/b1", json={"expected_count": 3}).status_code == 201
    return keys


def photo_bytes() -> bytes:
    return originals(1)[0].read_bytes()


def image(mode: str, size: tuple[int, int], fmt: str, color: Any = None, **kw: Any) -> bytes:
    return encode(Image.new(mode, size, color), fmt, **kw)


def noise_png(side: int) -> bytes:
    data = random.Random(0).randbytes(side * side * 3)
    return encode(Image.frombytes("RGB", (side, side), data), "PNG")


def cmyk_jpeg() -> bytes:
    rgb = Image.open(io.BytesIO(photo_bytes())).convert("RGB")
    return encode(rgb.convert("CMYK"), "JPEG", quality=90)


def chunked_multipart(field_name: str, filename: str, data: bytes) -> tuple[Iterator[bytes], str]:
    """A multipart body as a generator: httpx sends it chunked, without Content-Length."""
    boundary = "binwatch-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field_name}"; filename="{filename}"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def chunks() -> Iterator[bytes]:
        yield head
        for start in range(0, len(data), 64 * 1024):
            yield data[start : start + 64 * 1024]
        yield tail

    return chunks(), f"multipart/form-data; boundary={boundary}"


@dataclass
class Row:
    id: str
    status: int
    message: str
    method: str = "POST"
    path: str = "/v1/predictions"
    key: str = "admin"  # admin | predict | none | invalid
    build: Callable[[], dict[str, Any]] = field(default=lambda: {})


def upload(
    name: str, data: Callable[[], bytes], ctype: str, field_name: str = "images"
) -> Callable[[], dict]:
    return lambda: {"files": {field_name: (name, data(), ctype)}}


def chunked(data: Callable[[], bytes]) -> Callable[[], dict]:
    def build() -> dict:
        body, ctype = chunked_multipart("images", "big.png", data())
        return {"content": body, "headers": {"content-type": ctype}}

    return build


ROWS = [
    # images: bad
    Row("empty-file", 422, "the file is empty", build=upload("empty.jpg", lambda: b"", "image/jpeg")),
    Row(
        "text-named-jpg",
        422,
        "not a readable image",
        build=upload("notes.jpg", lambda: b"shopping list: 3 bins\n" * 20, "image/jpeg"),
    ),
    Row(
        "text-as-text-plain",
        415,
        "text/plain and is not an image",
        build=upload("notes.txt", lambda: b"shopping list\n" * 20, "text/plain"),
    ),
    Row(
        "pdf",
        415,
        "application/pdf and is not an image",
        build=upload(
            "doc.pdf", lambda: b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n" * 5, "application/pdf"
        ),
    ),
    Row(
        "random-bytes-as-png",
        422,
        "not a readable image",
        build=upload("x.png", lambda: random.Random(1).randbytes(5000), "image/png"),
    ),
    Row(
        "truncated-jpeg",
        422,
        "corrupt or truncated",
        build=upload("cut.jpg", lambda: photo_bytes()[: len(photo_bytes()) // 2], "image/jpeg"),
    ),
    Row(
        "jpeg-cut-inside-header",
        422,
        "corrupt or truncated",
        build=upload("cut.jpg", lambda: photo_bytes()[:300], "image/jpeg"),
    ),
    Row(
        "1x1-image",
        422,
        "at least 32 pixels",
        build=upload("dot.png", lambda: image("RGB", (1, 1), "PNG"), "image/png"),
    ),
    Row("20000x20000-bomb", 422, "too many pixels", build=upload("bomb.png", png_bomb, "image/png")),
    Row(
        "8000x8000-over-pixel-limit",
        422,
        "more than the limit of 50000000",
        build=upload("big.png", lambda: png_bomb(8000, 8000), "image/png"),
    ),
    Row(
        "7000x7000-png-of-zeros",
        422,
        "pixels a byte, more than 100, BINWATCH_MAX_PIXELS_PER_BYTE",
        build=upload("zeros.png", lambda: png_bomb(7000, 7000), "image/png"),
    ),
    Row(
        "over-upload-limit",
        413,
        f"limit of {UPLOAD_LIMIT + 64 * 1024} bytes",
        build=upload("big.png", lambda: noise_png(700), "image/png"),
    ),
    Row("over-upload-limit-chunked", 413, "larger than the limit", build=chunked(lambda: noise_png(700))),
    Row(
        "wrong-field-name",
        422,
        "body.images: Field required",
        build=upload("00011.jpg", photo_bytes, "image/jpeg", field_name="file"),
    ),
    Row(
        "json-instead-of-multipart",
        422,
        "body.images: Field required",
        build=lambda: {"json": {"images": ["00011.jpg"]}},
    ),
    Row(
        "multipart-without-boundary",
        400,
        "Missing boundary in multipart",
        build=lambda: {"content": b"--x\r\nnot a part", "headers": {"content-type": "multipart/form-data"}},
    ),
    Row(
        "malformed-multipart",
        400,
        "Invalid multipart data",
        build=lambda: {
            "content": b"--x\r\nnot a part\r\n\r\n--x--",
            "headers": {"content-type": "multipart/form-data; boundary=x"},
        },
    ),
    # images: valid, however unusual
    Row(
        "png-with-alpha",
        200,
        "",
        build=upload("a.png", lambda: image("RGBA", (200, 150), "PNG", (0, 0, 0, 0)), "image/png"),
    ),
    Row("cmyk-jpeg", 200, "", build=upload("cmyk.jpg", cmyk_jpeg, "image/jpeg")),
    Row(
        "16-bit-grey-png",
        200,
        "",
        build=upload("g.png", lambda: image("I;16", (120, 90), "PNG", 300), "image/png"),
    ),
    Row("webp", 200, "", build=upload("a.webp", lambda: image("RGB", (120, 90), "WEBP"), "image/webp")),
    Row("jpeg-declared-as-text", 200, "", build=upload("photo.txt", photo_bytes, "text/plain")),
    Row(
        "32x32-smallest-accepted",
        200,
        "",
        build=upload("s.png", lambda: image("RGB", (32, 32), "PNG"), "image/png"),
    ),
    # counts
    Row(
        "check-negative-count",
        422,
        "greater than or equal to 0",
        path="/v1/bins/b1/checks",
        build=lambda: {
            "files": {"image": ("p.jpg", photo_bytes(), "image/jpeg")},
            "data": {"expected_count": "-1"},
        },
    ),
    Row(
        "check-fractional-count",
        422,
        "valid integer",
        path="/v1/bins/b1/checks",
        build=lambda: {
            "files": {"image": ("p.jpg", photo_bytes(), "image/jpeg")},
            "data": {"expected_count": "2.5"},
        },
    ),
    Row(
        "check-text-count",
        422,
        "valid integer",
        path="/v1/bins/b1/checks",
        build=lambda: {
            "files": {"image": ("p.jpg", photo_bytes(), "image/jpeg")},
            "data": {"expected_count": "two"},
        },
    ),
    Row(
        "check-bad-image",
        422,
        "not a readable image",
        path="/v1/bins/b1/checks",
        build=lambda: {"files": {"image": ("p.jpg", b"GIF89a? no", "image/jpeg")}},
    ),
    Row(
        "bin-negative-count",
        422,
        "greater than or equal to 0",
        method="PUT",
        path="/v1/bins/b2",
        build=lambda: {"json": {"expected_count": -1}},
    ),
    Row(
        "bin-fractional-count",
        422,
        "valid integer",
        method="PUT",
        path="/v1/bins/b2",
        build=lambda: {"json": {"expected_count": 2.5}},
    ),
    Row(
        "bin-count-as-string",
        422,
        "valid integer",
        method="PUT",
        path="/v1/bins/b2",
        build=lambda: {"json": {"expected_count": "3"}},
    ),
    Row(
        "bin-count-as-bool",
        422,
        "valid integer",
        method="PUT",
        path="/v1/bins/b2",
        build=lambda: {"json": {"expected_count": True}},
    ),
    Row(
        "bin-count-overflows-int32",
        422,
        "less than or equal to 1000000",
        method="PUT",
        path="/v1/bins/b2",
        build=lambda: {"json": {"expected_count": 10**12}},
    ),
    Row(
        "abid-negative-quantity",
        422,
        "body.EXPECTED_QUANTITY",
        method="PUT",
        path="/v1/bins/b2",
        build=lambda: {"json": {"EXPECTED_QUANTITY": -2, "BIN_FCSKU_DATA": {}}},
    ),
    Row(
        "bin-json-over-limit",
        413,
        f"limit of {JSON_LIMIT} bytes",
        method="PUT",
        path="/v1/bins/b2",
        build=lambda: {"json": {"EXPECTED_QUANTITY": 1, "BIN_FCSKU_DATA": {"x": {"name": "y" * JSON_LIMIT}}}},
    ),
    Row(
        "bin-id-dot-dot",
        422,
        "String should match pattern",
        method="PUT",
        path="/v1/bins/..x",
        build=lambda: {"json": {"expected_count": 1}},
    ),
    # unknown ids
    Row("unknown-bin", 404, "bin 'nope' has no record", method="GET", path="/v1/bins/nope"),
    Row(
        "unknown-bin-check",
        404,
        "bin 'nope' has no record",
        path="/v1/bins/nope/checks",
        build=upload("p.jpg", photo_bytes, "image/jpeg", field_name="image"),
    ),
    Row("unknown-model", 404, "no model version with id 999", method="GET", path="/v1/models/999"),
    Row("promote-unknown-model", 404, "no model version with id 999", path="/v1/models/999/promote"),
    Row("model-id-not-a-number", 422, "valid integer", method="GET", path="/v1/models/abc"),
    # auth
    Row("missing-key", 401, "missing API key", key="none", build=upload("p.jpg", photo_bytes, "image/jpeg")),
    Row(
        "invalid-key",
        401,
        "invalid or revoked",
        key="invalid",
        build=upload("p.jpg", photo_bytes, "image/jpeg"),
    ),
    Row("insufficient-scope-bins", 403, "needs 'inventory'", method="GET", path="/v1/bins", key="predict"),
    Row("insufficient-scope-promote", 403, "needs 'admin'", path="/v1/models/1/promote", key="predict"),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(server: Server, keys: Keys, row: Row) -> None:
    secret = {"admin": keys.admin, "predict": keys.predict, "none": None, "invalid": "bw_" + "x" * 32}[
        row.key
    ]
    kwargs = row.build()
    headers = dict(kwargs.pop("headers", {}))
    if secret:
        headers["X-API-Key"] = secret
    before = server.vm_hwm_kb()
    with httpx.Client(base_url=server.url, timeout=120) as client:
        response = client.request(row.method, row.path, headers=headers, **kwargs)
    assert response.status_code == row.status, response.text
    if row.status >= 400:
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["status"] == row.status and problem["title"]
        assert row.message in problem["detail"], problem["detail"]
    else:
        prediction = response.json()["predictions"][0]
        assert prediction["label"] in prediction["probabilities"]
    if row.id == "20000x20000-bomb":
        # Decoding would need 400 MB (1-bit) and 1.2 GB as RGB; the header check refuses it first.
        assert server.vm_hwm_kb() - before < 100_000


def test_random_corruptions_of_a_real_photo_never_give_500(server: Server, keys: Keys) -> None:
    data = photo_bytes()
    rng = random.Random(7)
    statuses = []
    with server.client(keys.admin) as client:
        for _ in range(25):
            broken = bytearray(data)
            for _ in range(rng.randint(1, 40)):
                broken[rng.randrange(len(broken))] = rng.randrange(256)
            if rng.random() < 0.3:
                broken = broken[: rng.randrange(len(broken))]
            response = client.post(
                "/v1/predictions", files={"images": ("x.jpg", bytes(broken), "image/jpeg")}
            )
            statuses.append(response.status_code)
            assert response.status_code in (200, 422), response.text
            if response.status_code == 422:
                detail = response.json()["detail"]
                # Names the upload and what is wrong with it (api/images.py's decode messages).
                assert detail.startswith("image 'x.jpg': "), detail
                assert "corrupt or truncated" in detail or "send JPEG or PNG" in detail, detail
    # Seed 7 gives both: damage libjpeg decodes through (a count) and damage it refuses (a clear 422).
    assert 422 in statuses and 200 in statuses, statuses


def test_no_request_ended_in_a_500(server: Server, keys: Keys) -> None:
    # Bad requests of its own first, so this holds run alone; in file order it also covers the table above.
    data = photo_bytes()
    with server.client(keys.admin) as client:
        for body in (b"", data[:100], data[: len(data) // 2], b"GIF89a" + data[6:]):
            response = client.post("/v1/predictions", files={"images": ("x.jpg", body, "image/jpeg")})
            assert response.status_code == 422, response.text
        metrics = client.get("/metrics").text
    assert 'status="500"' not in metrics
    assert "Traceback" not in server.log()
    assert re.search(
        r'binwatch_http_requests_total\{method="POST",route="/v1/predictions",status="422"\}', metrics
    )
