"""Nylas webhooks: the challenge echo (API.md "Webhooks").

POST /webhooks/nylas (signed notifications) has one handler, api/webhook_path.py, which the
app runs before FastAPI routes anything; its OpenAPI entry is added by api/openapi.py."""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse

from services.errors import BadRequest

router = APIRouter(prefix="/webhooks", tags=["webhooks"])
MAX_CHALLENGE_CHARS = 200


@router.get("/nylas", response_class=PlainTextResponse, summary="Nylas endpoint verification")
async def nylas_challenge(challenge: str | None = Query(default=None)) -> PlainTextResponse:
    """Echo `challenge` as plain text, as Nylas expects when the webhook is created."""
    if challenge is None:
        raise BadRequest("The 'challenge' query parameter is required.")
    if len(challenge) > MAX_CHALLENGE_CHARS:
        # Nylas sends a short random token; anything longer is someone using our origin to
        # serve their text.
        raise BadRequest(f"The 'challenge' is over {MAX_CHALLENGE_CHARS} characters.")
    return PlainTextResponse(challenge)
