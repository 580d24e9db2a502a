"""Bodies of the review endpoints: what a person says about a check's photo.

The body checks types and bounds only. Whether a review is consistent (a count with "counted", none with
"unusable", correcting the record only with a count) is records/reviews.py's rule, the one place both this
API and the console rely on; it answers 422 with the same words for both."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from records.reviews import MAX_SEEN_COUNT

Outcome = Literal["confirmed", "counted", "unusable"]


class ReviewBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"outcome": "confirmed"},
                {"outcome": "counted", "seen_count": 3, "correct_record": True},
                {"outcome": "unusable"},
            ]
        },
    )

    outcome: Outcome = Field(
        description="confirmed: the bin holds its recorded count; counted: you counted seen_count objects; "
        "unusable: the photo cannot be counted (never used for training)."
    )
    seen_count: int | None = Field(
        default=None, ge=0, le=MAX_SEEN_COUNT, description="The count you see; needed for 'counted'."
    )
    correct_record: bool = Field(
        default=False, description="With 'counted': also set the bin's recorded count to seen_count."
    )


class ReviewOut(BaseModel):
    outcome: Outcome
    seen_count: int | None = Field(description="The count the reviewer gave; null when unusable.")
    recorded_count: int = Field(description="The bin's recorded count when the review was made.")
    corrected_record: bool = Field(description="Whether this review changed the bin's recorded count.")
    reviewer: str
    reviewed_at: datetime
