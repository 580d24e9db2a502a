"""Request and response bodies at the API edge (pydantic), with the examples the OpenAPI schema shows."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from api.review_schemas import ReviewOut
from records.text_rules import SafeText, check_json

# Bins never hold a million objects; the bound also keeps counts inside a 32-bit database integer.
MAX_COUNT = 1_000_000
# Bin ids become artifact keys (checks/<bin_id>/...): letters, digits, '.', '_' and '-', starting with a
# letter or digit, so '.' and '..' can never be one.
BIN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"

# Database ids are 32-bit on Postgres; larger ids cannot exist, and asking for one is a client error (422),
# not a query that overflows the column type (500).
MAX_ID = 2**31 - 1


def _integral(value: Any) -> Any:
    # JSON has one number type: 4.0 is the integer 4 (JSON Schema agrees). Strings and booleans stay
    # refused (strict below): "4" or true as a count is a client bug worth a 422.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Count = Annotated[int, BeforeValidator(_integral), Field(ge=0, le=MAX_COUNT, strict=True)]

PROBS_EXAMPLE = {"0": 0.001, "1": 0.004, "2": 0.02, "3": 0.11, "4": 0.71, "5": 0.13, "6+": 0.025}


class ModelRef(BaseModel):
    id: int = Field(description="Model version id (GET /v1/models/{id}).")
    name: str
    sha256: str


class Prediction(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "filename": "00011.jpg",
                    "count": 4,
                    "label": "4",
                    "is_overflow": False,
                    "confidence": 0.71,
                    "probabilities": PROBS_EXAMPLE,
                    "model": {"id": 3, "name": "cpu-quick", "sha256": "9f2c…"},
                }
            ]
        }
    )

    filename: str
    count: int = Field(description="Predicted count; for the overflow class its lower bound (6 for '6+').")
    label: str = Field(description="The predicted class: '0'..'5', or '6+' for six or more.")
    is_overflow: bool = Field(description="True when the count is only a lower bound ('6+').")
    confidence: float = Field(description="Probability of the predicted class.")
    probabilities: dict[str, float] = Field(description="Calibrated probability of every class (sums to 1).")
    model: ModelRef = Field(description="The model version that produced this prediction.")


class PredictionsResponse(BaseModel):
    predictions: list[Prediction]


class BinCountBody(BaseModel):
    """Set the recorded count directly."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"expected_count": 4}]})

    expected_count: Count = Field(description="How many objects the bin should hold (integer >= 0).")


class AbidMetadataBody(BaseModel):
    """An ABID metadata json as published (``metadata/<id>.json``): count and items are taken from it."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "EXPECTED_QUANTITY": 2,
                    "BIN_FCSKU_DATA": {
                        "B00CXACR1U": {"asin": "B00CXACR1U", "name": "Optical cable (6')", "quantity": 2}
                    },
                }
            ]
        },
    )

    EXPECTED_QUANTITY: Count = Field(description="The bin's object count.")
    BIN_FCSKU_DATA: dict[str, dict[str, Any]] | None = Field(
        default=None,
        max_length=10_000,
        description="Items by ASIN; kept with the bin as a list. Every key and string must be valid Unicode "
        "text without NUL, at most 4096 characters; at most 8 levels deep.",
    )

    @field_validator("BIN_FCSKU_DATA")
    @classmethod
    def _storable(cls, value: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]] | None:
        # Only this member is stored (as the bin's items); unknown members are accepted and dropped.
        return check_json(value, what="BIN_FCSKU_DATA") if value is not None else None


class BinOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "00011",
                    "expected_count": 7,
                    "source": "abid-metadata",
                    "items": [{"asin": "B00CXACR1U", "quantity": 2}],
                    "created_at": "2026-11-25T18:00:00Z",
                    "updated_at": "2026-11-25T18:00:00Z",
                    "last_verdict": "mismatch",
                    "last_verdict_check_id": 12,
                    "last_checked_at": "2026-11-25T18:05:00Z",
                }
            ]
        }
    )

    id: str
    expected_count: int
    source: Literal["api", "abid-metadata", "review"] = Field(
        description="Where the recorded count came from (review: corrected in a review of a check)."
    )
    items: list[dict[str, Any]] | None = Field(description="ABID items (BIN_FCSKU_DATA), if loaded from one.")
    created_at: datetime
    updated_at: datetime
    last_verdict: Literal["match", "mismatch", "uncertain"] | None = Field(
        description="Verdict of the latest check against the recorded count; null if none since it was set."
    )
    last_verdict_check_id: int | None = Field(
        description="The check that gave last_verdict; it judged exactly this expected_count."
    )
    last_checked_at: datetime | None


class BinPage(BaseModel):
    items: list[BinOut]
    next_cursor: str | None = Field(description="Pass as ?after= for the next page; null on the last page.")


class CheckOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 12,
                    "bin_id": "00011",
                    "verdict": "mismatch",
                    "expected_count": 2,
                    "expected_label": "2",
                    "probability_of_expected": 0.02,
                    "predicted_count": 4,
                    "predicted_label": "4",
                    "is_overflow": False,
                    "confidence": 0.71,
                    "probabilities": PROBS_EXAMPLE,
                    "thresholds": {"match": 1.26, "mismatch": 0.296},
                    "score": 0.04,
                    "judged_by": "neighbour_ratio",
                    "risk": "at this setting about 1 correct record in 20 is called a mismatch; this model "
                    "catches about 18% of off-by-one records and lets 10% of them through as match "
                    "(measured on 1182 correct and 2343 off-by-one records of its validation split)",
                    "model_version_id": 3,
                    "image_url": "/v1/bins/00011/checks/12/image",
                    "created_at": "2026-11-25T18:05:00Z",
                }
            ]
        }
    )

    id: int
    bin_id: str
    verdict: Literal["match", "mismatch", "uncertain"]
    expected_count: int = Field(description="The recorded count the photo was judged against.")
    expected_label: str | None = Field(description="The model class that count falls in ('6+' for 12).")
    probability_of_expected: float | None = Field(
        description="The model's probability of expected_label; null if it has no class for the count."
    )
    predicted_count: int
    predicted_label: str
    is_overflow: bool
    confidence: float
    probabilities: dict[str, float]
    thresholds: dict[str, float] = Field(
        description="match / mismatch thresholds the score was judged by (docs/verdicts.md)."
    )
    score: float | None = Field(
        default=None,
        description="The number the thresholds were applied to (judged_by); null if the model has no class "
        "for the count.",
    )
    judged_by: Literal["neighbour_ratio", "probability"] = Field(
        default="probability",
        description="neighbour_ratio: P(recorded) over the likelier of its neighbouring counts; probability: "
        "P(recorded) itself (every check stored before binwatch had scores).",
    )
    risk: str | None = Field(
        default=None,
        description="What the thresholds risk, in words: how many correct records they call a mismatch "
        "and how many off-by-one records they catch, as measured for this model version.",
    )
    model_version_id: int | None
    image_url: str = Field(description="Where the stored photo can be fetched.")
    created_at: datetime
    review: ReviewOut | None = Field(
        default=None, description="What a person said about the photo (POST …/review); null if unreviewed."
    )


class NewCheck(CheckOut):
    expected_count_source: Literal["record", "request"] = Field(
        description="record: the bin's recorded count; request: the expected_count sent with the photo "
        "(then the bin's last_verdict is left alone unless the two agree)."
    )
    updated_last_verdict: bool = Field(
        description="Whether this verdict became the bin's last_verdict: the count it judged is the one the "
        "bin recorded when the check was stored."
    )
    reason: str = Field(description="The verdict rule applied to this photo, in words.")
    model: ModelRef


class CheckPage(BaseModel):
    items: list[CheckOut]
    next_cursor: str | None = Field(description="Pass as ?before= for the next page; null on the last page.")


class PromotionOut(BaseModel):
    promoted_at: datetime
    actor: str
    reason: str


class ModelOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 3,
                    "name": "cpu-quick",
                    "sha256": "9f2c8e…",
                    "architecture": "resnet18",
                    "classes": ["0", "1", "2", "3", "4", "5", "6+"],
                    "metrics": {"accuracy": 0.41, "rmse": 1.2, "within_one": 0.78},
                    "source": "cli",
                    "training_job_id": None,
                    "is_active": True,
                    "serving": True,
                    "created_at": "2026-11-25T17:50:00Z",
                    "promoted_at": "2026-11-25T17:51:00Z",
                }
            ]
        }
    )

    id: int
    name: str
    sha256: str
    architecture: str
    classes: list[str]
    metrics: dict[str, Any] = Field(
        description="Headline validation metrics (full set on GET /v1/models/{id})."
    )
    source: Literal["cli", "job"]
    training_job_id: str | None
    is_active: bool
    serving: bool = Field(description="Whether the process that answered serves this version right now.")
    created_at: datetime
    promoted_at: datetime | None


class VerdictRuleOut(BaseModel):
    score: Literal["neighbour_ratio", "probability"] = Field(description="What the thresholds apply to.")
    match: float = Field(description="Score at or above this: match.")
    mismatch: float = Field(description="Score below this: mismatch.")
    source: Literal["model", "settings", "legacy"] = Field(
        description="model: this version's operating points; settings: the deployment's thresholds; "
        "legacy: a version without operating points, judged by P(recorded count) at 0.35 / 0.05."
    )
    risk: str = Field(description="What the rule risks, in words.")


class ModelDetail(ModelOut):
    preprocessing: dict[str, Any]
    artifact_key: str
    plots: dict[str, str]
    promotions: list[PromotionOut]
    operating_points: dict[str, Any] | None = Field(
        default=None,
        description="Verdict thresholds measured on the version's validation split, per score and "
        "false-alarm target, with the rates they were measured at (docs/verdicts.md); null for versions "
        "registered before binwatch stored them.",
    )
    verdict_rule: VerdictRuleOut = Field(
        description="The rule checks judged by this version use under this deployment's settings."
    )


class ModelPage(BaseModel):
    items: list[ModelOut]
    next_cursor: str | None = Field(description="Pass as ?before= for the next page; null on the last page.")


class PromoteBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"reason": "better 0-5 accuracy"}]}
    )

    reason: SafeText = Field(default="promoted through the API", min_length=1, max_length=2000)


class PromoteResult(BaseModel):
    model: ModelDetail
    changed: bool = Field(description="False when the version was already active.")


class Alive(BaseModel):
    status: Literal["alive"] = "alive"


class Ready(BaseModel):
    status: Literal["ready"] = "ready"
    database: Literal["ok"] = "ok"
    model: ModelRef
    backend: str = Field(
        description="What runs the forward pass: torch or onnx (BINWATCH_INFERENCE_BACKEND)."
    )
