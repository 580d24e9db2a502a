"""Upload: count the objects in photos, or check a bin's photo against its record.

Both call the API's own handlers (POST /v1/predictions and POST /v1/bins/{id}/checks), so the console
applies the same limits, checks and errors as the JSON API.
"""

from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.responses import RedirectResponse, Response

from api.console.check_view import Bar
from api.console.render import page
from api.console.session import ScopeMissing, SignedIn, State, Viewer, checked_form
from api.deps import AppState, require_model
from api.problems import Problem
from api.routes.checks import create_check
from api.routes.predictions import predict
from api.schemas import BIN_ID_PATTERN

router = APIRouter(include_in_schema=False)

THUMB_SIDE = 160


@dataclass(frozen=True)
class Counted:
    filename: str
    thumbnail: str  # a data: URL (the photo is not stored)
    label: str
    confidence: float
    bars: list[Bar]

    @property
    def alt(self) -> str:
        return f"Uploaded photo {self.filename}: the model counts {self.label}"


def _thumbnail(data: bytes) -> str:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img = img.convert("RGB")
            img.thumbnail((THUMB_SIDE, THUMB_SIDE))
            out = io.BytesIO()
            img.save(out, "JPEG", quality=80)
    except Exception:  # noqa: BLE001 - a preview only; the count itself already succeeded
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()


def _forms(viewer: Viewer) -> dict[str, bool]:
    return {"can_count": viewer.can("predict"), "can_check": viewer.can("inventory")}


@router.get("/upload")
async def upload_form(request: Request, viewer: SignedIn) -> Response:
    return page(request, "upload.html", viewer, **_forms(viewer))


async def _counted(state: AppState, files: list[UploadFile], viewer: Viewer) -> list[Counted]:
    model = require_model(state)
    answer = await predict(files, viewer.principal, state, model)
    shown = []
    for file, prediction in zip(files, answer.predictions, strict=True):
        await file.seek(0)
        thumb = await state.decode(_thumbnail, await file.read(), key=viewer.principal.key_id)
        bars = [
            Bar(label, p, False, label == prediction.label) for label, p in prediction.probabilities.items()
        ]
        shown.append(
            Counted(prediction.filename or "photo", thumb, prediction.label, prediction.confidence, bars)
        )
    return shown


@router.post("/upload/count")
async def count(request: Request, viewer: SignedIn, state: State) -> Response:
    form = await checked_form(request, viewer)
    if not viewer.can("predict"):
        raise ScopeMissing(viewer, "predict")
    files = [f for f in form.getlist("images") if isinstance(f, UploadFile) and f.filename]
    context: dict[str, Any] = _forms(viewer)
    if not files:
        return page(
            request, "upload.html", viewer, 422, error="Choose one or more photos to count.", **context
        )
    try:
        results = await _counted(state, files, viewer)
    except Problem as exc:
        return page(request, "upload.html", viewer, exc.status, error=exc.detail, **context)
    return page(request, "upload.html", viewer, results=results, **context)


@router.post("/upload/check")
async def check(request: Request, viewer: SignedIn, state: State) -> Response:
    form = await checked_form(request, viewer)
    if not viewer.can("inventory"):
        raise ScopeMissing(viewer, "inventory")
    bin_id = str(form.get("bin_id") or "").strip()
    image = form.get("image")
    context: dict[str, Any] = {**_forms(viewer), "bin_id": bin_id}
    if not re.fullmatch(BIN_ID_PATTERN, bin_id):
        error = f"{bin_id!r} is not a bin id: use letters, digits, '.', '_' and '-' (for example 00011)."
        return page(request, "upload.html", viewer, 422, error=error, **context)
    if not isinstance(image, UploadFile) or not image.filename:
        return page(request, "upload.html", viewer, 422, error="Choose the bin's photo.", **context)
    try:
        model = require_model(state)
        new = await create_check(bin_id, request, image, viewer.principal, state, model, None, None)
    except Problem as exc:
        return page(request, "upload.html", viewer, exc.status, error=exc.detail, **context)
    assert not isinstance(new, Response)  # no Idempotency-Key: never a replayed answer
    return RedirectResponse(f"/checks/{new.id}", status_code=303)
