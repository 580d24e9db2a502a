"""A bin's photo checks: count a photo, judge the recorded count, store both; the history and the photos.

The check's review, if a person made one (api/routes/reviews.py), is shown with it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, File, Form, Path, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api import idempotency, images
from api.deps import AppState, Principal, get_db, get_state, require_model, require_scope
from api.idempotency import IdempotentRequest
from api.inference import count_uploads
from api.model_manager import ServingModel
from api.problems import VALIDATION, Problem, problem_responses
from api.review_schemas import ReviewOut
from api.routes.bins import BinId
from api.schemas import MAX_COUNT, MAX_ID, CheckOut, CheckPage, ModelRef, NewCheck
from api.verdict_rule import rule_for
from model.verdicts import classes_from_labels, judge
from records import bins as bin_records
from records import reviews as review_records
from records.artifacts import ArtifactNotFound
from records.db import session_scope
from records.orm import BinCheck, utcnow
from records.orm_console import CheckReview

log = logging.getLogger("binwatch.api.bins")

router = APIRouter(prefix="/v1/bins", tags=["bins"])

PHOTO_MEDIA_TYPES = sorted(set(images.CONTENT_TYPE_OF_FORMAT.values()) | {"application/octet-stream"})

BINARY = {"type": "string", "format": "binary"}

CheckId = Annotated[int, Path(ge=1, le=MAX_ID, description="The check's id.")]


def review_out(review: CheckReview | None) -> ReviewOut | None:
    if review is None:
        return None
    return ReviewOut(
        outcome=review.outcome,  # type: ignore[arg-type]
        seen_count=review.seen_count,
        recorded_count=review.recorded_count,
        corrected_record=review.corrected_record,
        reviewer=review.reviewer,
        reviewed_at=review.reviewed_at,
    )


def check_out(check: BinCheck, review: CheckReview | None = None) -> CheckOut:
    labels = list(check.probabilities)
    expected_label: str | None = None
    try:
        index = classes_from_labels(labels).class_of(check.expected_count)
        expected_label = labels[index] if index is not None else None
    except ValueError:
        pass
    return CheckOut(
        id=check.id,
        bin_id=check.bin_id,
        verdict=check.verdict,  # type: ignore[arg-type]
        expected_count=check.expected_count,
        expected_label=expected_label,
        probability_of_expected=check.probability_of_expected,
        predicted_count=check.predicted_count,
        predicted_label=check.predicted_label,
        is_overflow=check.predicted_label.endswith("+"),
        confidence=check.probabilities.get(check.predicted_label, 0.0),
        probabilities=check.probabilities,
        thresholds=check.thresholds,
        score=check.score,
        judged_by=check.judged_by or "probability",  # type: ignore[arg-type]
        risk=check.risk,
        model_version_id=check.model_version_id,
        image_url=f"/v1/bins/{check.bin_id}/checks/{check.id}/image",
        created_at=check.created_at,
        review=review_out(review),
    )


def _not_found(exc: LookupError) -> Problem:
    return Problem(404, str(exc))


def _recorded_count(state: AppState, bin_id: str) -> int:
    with session_scope(state.session_factory) as session:
        try:
            return bin_records.require_bin(session, bin_id).expected_count
        except bin_records.BinNotFound as exc:
            raise _not_found(exc) from exc


def _store_check(
    state: AppState,
    bin_id: str,
    upload: images.Upload,
    info: images.ImageInfo,
    respond: Callable[[BinCheck, bool], NewCheck],
    idem: IdempotentRequest | None,
    **check: Any,
) -> NewCheck | JSONResponse:
    """Store the photo and the check (and, with an Idempotency-Key, the answer, in the same transaction);
    returns the answer, or the stored answer of a request with the same key that committed first."""
    now = utcnow()
    image_key = f"checks/{bin_id}/{now:%Y/%m/%d}/{uuid.uuid4().hex}.{info.extension}"
    state.artifacts.put_bytes(image_key, upload.data, info.content_type)
    try:
        with session_scope(state.session_factory) as session:
            stored, judged = bin_records.record_check(session, bin_id, image_key=image_key, **check)
            answer = respond(stored, judged)
            idempotency.remember(session, idem, 201, answer.model_dump(mode="json"))
            return answer
    except BaseException as exc:
        # No row points at the photo: do not keep it.
        state.artifacts.delete(image_key)
        if isinstance(exc, bin_records.BinNotFound):  # deleted while the photo was being counted
            raise _not_found(exc) from exc
        if isinstance(exc, sa.exc.IntegrityError) and idem is not None:
            # A request with the same Idempotency-Key committed first: answer as it did.
            with session_scope(state.session_factory) as session:
                first = idempotency.replay(session, idem)
            if first is not None:
                return first
        raise


@router.post(
    "/{bin_id}/checks",
    response_model=NewCheck,
    status_code=201,
    summary="Check a bin's photo against its recorded count",
    responses=problem_responses(400, 401, 403, 404, 413, 415, 422, 503),
)
async def create_check(
    bin_id: BinId,
    request: Request,
    image: Annotated[
        UploadFile, File(description="The bin photo (JPEG, PNG, WebP, GIF, BMP, TIFF); exactly one.")
    ],
    key: Annotated[Principal, Depends(require_scope("inventory"))],
    state: Annotated[AppState, Depends(get_state)],
    model: Annotated[ServingModel, Depends(require_model)],
    idempotency_key: idempotency.IdempotencyKey = None,
    expected_count: Annotated[
        int | None,
        Form(ge=0, le=MAX_COUNT, description="Judge against this count instead of the recorded one."),
    ] = None,
) -> NewCheck | JSONResponse:
    """Counts the objects in the photo and judges the bin's recorded count (or ``expected_count``) by
    the model's probability of that count: ``match`` / ``mismatch`` / ``uncertain`` (docs/verdicts.md).

    A recorded count above the model's range is judged against the overflow class (12 vs ``"6+"`` is a
    match). The photo and the check are stored. The verdict becomes the bin's ``last_verdict`` when the
    count it judged is the bin's recorded count at the moment the check is stored (a PUT that changed
    the count meanwhile wins). Send an ``Idempotency-Key`` to make retries safe. Needs ``inventory``.
    """
    # FastAPI would silently take one of several parts named "image"; the parsed form is cached.
    parts = len((await request.form()).getlist("image"))
    if parts != 1:
        raise Problem(
            422,
            f"send exactly one 'image' part (this request has {parts}); check one photo per request",
            type=VALIDATION,
            title="Invalid request",
            errors=[{"loc": ["body", "image"], "msg": "exactly one image", "type": "value_error"}],
        )
    upload = await images.read_upload(image)
    idem = idempotency.request_for(
        idempotency_key,
        key.key_id,
        f"POST /v1/bins/{bin_id}/checks",
        upload.data,
        "" if expected_count is None else str(expected_count),
    )
    first = await run_in_threadpool(_replay, state, idem)
    if first is not None:
        return first
    recorded = await run_in_threadpool(_recorded_count, state, bin_id)
    expected = recorded if expected_count is None else expected_count
    (result,), infos = await count_uploads(state, model, [upload], key.key_id)
    prediction = result.prediction
    version = result.model.version
    rule = rule_for(state.settings, version.operating_points)
    verdict = judge(
        expected,
        prediction.probabilities,
        result.model.classes,
        match_threshold=rule.match,
        mismatch_threshold=rule.mismatch,
        score=rule.score,
    )

    def respond(check: BinCheck, judged: bool) -> NewCheck:
        return NewCheck(
            **check_out(check).model_dump(exclude={"expected_label"}),
            expected_label=verdict.expected_label,
            expected_count_source="record" if expected_count is None else "request",
            updated_last_verdict=judged,
            reason=verdict.reason,
            model=ModelRef(id=version.id, name=version.name, sha256=version.sha256),
        )

    answer = await run_in_threadpool(
        partial(
            _store_check,
            state,
            bin_id,
            upload,
            infos[0],
            respond,
            idem,
            expected_count=expected,
            predicted_count=prediction.count,
            predicted_label=prediction.label,
            probabilities=prediction.probabilities,
            probability_of_expected=verdict.probability_of_expected,
            verdict=verdict.verdict,
            thresholds=verdict.thresholds,
            model_version_id=result.model.version_id,
            score=verdict.score,
            judged_by=verdict.judged_by,
            risk=rule.risk,
        )
    )
    if isinstance(answer, NewCheck):
        state.metrics.checks.labels(verdict.verdict).inc()
    return answer


def _replay(state: AppState, idem: IdempotentRequest | None) -> JSONResponse | None:
    if idem is None:
        return None
    with session_scope(state.session_factory) as session:
        return idempotency.replay(session, idem)


@router.get(
    "/{bin_id}/checks",
    response_model=CheckPage,
    summary="A bin's check history",
    responses=problem_responses(401, 403, 404, 422),
)
def list_checks(
    bin_id: BinId,
    key: Annotated[Principal, Depends(require_scope("inventory"))],
    session: Annotated[Session, Depends(get_db)],
    before: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="The previous page's next_cursor.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 50,
) -> CheckPage:
    """The bin's checks, newest first. Needs ``inventory``."""
    try:
        bin_records.require_bin(session, bin_id)
    except bin_records.BinNotFound as exc:
        raise _not_found(exc) from exc
    page = bin_records.list_checks(session, bin_id, before=before, limit=limit)
    reviews = review_records.reviews_of(session, [c.id for c in page.items])
    return CheckPage(
        items=[check_out(c, reviews.get(c.id)) for c in page.items], next_cursor=page.next_cursor
    )


def _require_check(session: Session, bin_id: str, check_id: int) -> BinCheck:
    check = bin_records.get_check(session, bin_id, check_id)
    if check is None:
        raise Problem(404, f"bin {bin_id!r} has no check {check_id}")
    return check


@router.get(
    "/{bin_id}/checks/{check_id}",
    response_model=CheckOut,
    summary="One check",
    responses=problem_responses(401, 403, 404, 422),
)
def get_check(
    bin_id: BinId,
    check_id: CheckId,
    key: Annotated[Principal, Depends(require_scope("inventory"))],
    session: Annotated[Session, Depends(get_db)],
) -> CheckOut:
    """One stored check, with its review if it has one. Needs ``inventory``."""
    return check_out(_require_check(session, bin_id, check_id), review_records.review_of(session, check_id))


@router.get(
    "/{bin_id}/checks/{check_id}/image",
    summary="The photo a check judged",
    response_class=Response,
    responses={
        200: {
            "content": {media: {"schema": BINARY} for media in PHOTO_MEDIA_TYPES},
            "description": "The stored photo, as uploaded.",
        },
        **problem_responses(401, 403, 404, 422),
    },
)
def get_check_image(
    bin_id: BinId,
    check_id: CheckId,
    key: Annotated[Principal, Depends(require_scope("inventory"))],
    state: Annotated[AppState, Depends(get_state)],
    session: Annotated[Session, Depends(get_db)],
) -> Response:
    """The photo exactly as it was uploaded. Needs ``inventory``."""
    check = _require_check(session, bin_id, check_id)
    try:
        data = state.artifacts.get_bytes(check.image_key)
    except ArtifactNotFound as exc:
        raise Problem(404, f"the photo of check {check_id} is no longer in the artifact store") from exc
    ext = check.image_key.rsplit(".", 1)[-1]
    media = images.CONTENT_TYPE_OF_EXTENSION.get(ext, "application/octet-stream")
    return Response(content=data, media_type=media)
