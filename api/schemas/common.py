"""Bodies shared by several routes: the job answer, the error envelope, email addresses."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

EMAIL_PATTERN = r"^[^@\s]{1,64}@[^@\s]{1,255}$"


class Strict(BaseModel):
    """Unknown fields are refused: a typo must not be silently ignored."""

    model_config = ConfigDict(extra="forbid")


class JobAccepted(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "event_id": "0b8f4a8e-3c1e-4d5e-9a53-2f7f0c3c9a11",
                    "task_id": "5b0c0d7e-4b07-4a6b-8a5e-1c0e6b8f9d21",
                }
            ]
        }
    )
    event_id: str
    task_id: str


class ErrorInfo(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] | None = None
    request_id: str | None = None


class ErrorBody(BaseModel):
    error: ErrorInfo


class Address(BaseModel):
    name: str | None = None
    email: str | None = None


class AddressIn(Strict):
    email: str = Field(pattern=EMAIL_PATTERN, max_length=320, examples=["ana@example.com"])
    # No CR/LF: a header line break in a display name is refused here, not after a 202.
    name: str | None = Field(default=None, max_length=200, pattern=r"^[^\r\n]*$")


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can answer, all with the envelope."""
    text = {
        400: "Malformed request (bad JSON, bad cursor)",
        401: "Missing, invalid or revoked API key",
        404: "Not found (or belongs to another tenant)",
        409: "Conflict (idempotency key reused with a different body)",
        413: "Body over the limit",
        422: "Validation failed",
        503: "Database unavailable",
    }
    return {c: {"model": ErrorBody, "description": text.get(c, "Error")} for c in codes}
