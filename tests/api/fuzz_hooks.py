"""Schemathesis hooks for tests/api/test_fuzz.py: the photo endpoints get real ABID photos.

A schema can say "binary", not "a photo": left alone, the fuzzer sends random bytes, which are never an
image, so almost no check is ever created and the stored-photo paths (a check, its image, its review) are
barely reached. Here every photo part is a real ABID photo (224-px copies and full-size originals, one as
PNG), drawn by Hypothesis, while every other field stays the fuzzer's. Loaded with
``SCHEMATHESIS_HOOKS=tests.api.fuzz_hooks``.
"""

from __future__ import annotations

import io
from typing import Any

import schemathesis
from hypothesis import strategies as st
from PIL import Image

from tests.conftest import ABID


def _photos() -> list[bytes]:
    small = sorted((ABID / "bin-images").glob("*.jpg"))[:4]
    full = sorted((ABID / "originals").glob("*.jpg"))[:2]
    photos = [p.read_bytes() for p in (*small, *full)]
    png = io.BytesIO()
    Image.open(small[0]).save(png, "PNG")
    return [*photos, png.getvalue()]


PHOTOS = st.sampled_from(_photos())


def _operation(context: Any) -> tuple[str, str]:
    operation = getattr(context, "operation", None)
    return (getattr(operation, "method", "").upper(), getattr(operation, "path", ""))


def _binary(value: Any) -> bool:
    return isinstance(value, (bytes, str))


@schemathesis.hook
def flatmap_body(context: Any, body: Any) -> Any:
    """Swap a well-formed photo part for real photos; a part the fuzzer made malformed on purpose (a
    negative case: a number, a list where one file belongs) is left alone, so it is still refused."""
    method, path = _operation(context)
    if method != "POST" or not isinstance(body, dict):
        return st.just(body)
    if path == "/v1/bins/{bin_id}/checks" and _binary(body.get("image")):
        return PHOTOS.map(lambda photo: {**body, "image": photo})
    images = body.get("images")
    if path == "/v1/predictions" and isinstance(images, list) and images and all(map(_binary, images)):
        return st.lists(PHOTOS, min_size=1, max_size=3).map(lambda photos: {**body, "images": photos})
    return st.just(body)


# The bin and check tests/api/test_fuzz.py seeds: half the time a check path names them, so reads and
# reviews reach a stored check and its photo instead of a 404 (the other half keeps the fuzzer's ids).
SEEDED = {"bin_id": "00011", "check_id": 1}


@schemathesis.hook
def flatmap_path_parameters(context: Any, path_parameters: Any) -> Any:
    _method, path = _operation(context)
    if not path.startswith("/v1/bins/{bin_id}/checks") or not isinstance(path_parameters, dict):
        return st.just(path_parameters)
    seeded = {**path_parameters, **{k: v for k, v in SEEDED.items() if k in path_parameters}}
    return st.sampled_from([path_parameters, seeded])
