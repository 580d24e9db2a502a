"""Bodies of the review endpoints: what a person says about a check's photo (records/reviews.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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

    @model_validator(mode="after")
    def _consistent(self) -> ReviewBody:
        if self.outcome == "counted" and self.seen_count is None:
            raise ValueError("a 'counted' review needs seen_count: the number of objects you see")
        if self.outcome == "unusable" and self.seen_count is not None:
            raise ValueError("an 'unusable' review has no seen_count: leave it out")
        if self.correct_record and self.outcome != "counted":
            raise ValueError("correct_record needs outcome 'counted' and the seen_count to record")
        return self


class ReviewOut(BaseModel):
    outcome: Outcome
    seen_count: int | None = Field(description="The count the reviewer gave; null when unusable.")
    recorded_count: int = Field(description="The bin's recorded count when the review was made.")
    corrected_record: bool = Field(description="Whether this review changed the bin's recorded count.")
    reviewer: str
    reviewed_at: datetime
