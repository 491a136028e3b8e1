"""Suppression list bodies (API.md "Delivery reports")."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.common import Strict


class SuppressionIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"email": "bo@example.com", "reason": "asked by phone"}]},
    )
    email: str = Field(
        min_length=3, max_length=320, pattern=r"^[^@\s<>\x00-\x1f]{1,64}@[^@\s<>\x00-\x1f]{1,255}$"
    )
    reason: str | None = Field(default=None, min_length=1, max_length=64)


class SuppressionPublic(BaseModel):
    email: str
    reason: str
    # The delivery report (a message id) that suppressed it; null for the API and unsubscribes.
    report_id: str | None
    created_at: datetime


class SuppressionPage(BaseModel):
    data: list[SuppressionPublic]
    next_cursor: str | None
