"""POST /v1/predictions: count the objects in one or more bin photos."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, UploadFile

from api import images
from api.deps import AppState, Principal, get_state, require_model, require_scope
from api.inference import count_uploads
from api.model_manager import ServingModel
from api.problems import Problem, problem_responses
from api.schemas import ModelRef, Prediction, PredictionsResponse

router = APIRouter(prefix="/v1", tags=["predictions"])


@router.post(
    "/predictions",
    response_model=PredictionsResponse,
    summary="Count the objects in bin photos",
    responses=problem_responses(400, 401, 403, 413, 415, 422, 503),
)
async def predict(
    images_: Annotated[
        list[UploadFile],
        File(
            alias="images",
            description="One or more photos (JPEG, PNG, ...), each as a part named 'images'. Any size up to "
            "BINWATCH_MAX_UPLOAD_BYTES for the whole request.",
        ),
    ],
    key: Annotated[Principal, Depends(require_scope("predict"))],
    state: Annotated[AppState, Depends(get_state)],
    model: Annotated[ServingModel, Depends(require_model)],
) -> PredictionsResponse:
    """Counts the objects in each photo with the active model.

    Per image: the predicted count and class label (``"6+"`` means six or more, with ``count`` 6 and
    ``is_overflow`` true), the calibrated probability of every class, the confidence (probability of the
    predicted class) and the model version that produced it. Concurrent requests share inference
    batches. Any unreadable image fails the whole request (422 names it).

    Needs an API key with the ``predict`` scope.
    """
    if len(images_) > state.settings.max_images_per_request:
        raise Problem(
            413,
            f"{len(images_)} images in one request; at most {state.settings.max_images_per_request} "
            "(BINWATCH_MAX_IMAGES_PER_REQUEST)",
        )
    uploads = [await images.read_upload(f) for f in images_]
    results, _infos = await count_uploads(state, model, uploads, key.key_id)
    out = []
    for upload, result in zip(uploads, results, strict=True):
        p, version = result.prediction, result.model.version
        out.append(
            Prediction(
                filename=upload.filename,
                count=p.count,
                label=p.label,
                is_overflow=p.is_overflow,
                confidence=p.confidence,
                probabilities=p.probabilities,
                model=ModelRef(id=version.id, name=version.name, sha256=version.sha256),
            )
        )
    return PredictionsResponse(predictions=out)
