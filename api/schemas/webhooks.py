"""POST /webhooks/nylas in /openapi.json: the route is answered ahead of FastAPI
(api/webhook_path.py), so api/openapi.py adds this entry to the document."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class WebhookAck(BaseModel):
    status: str
    event_id: str | None


# The route's entry in /openapi.json (api/openapi.py adds it under /webhooks/nylas).
OPENAPI_POST: dict[str, Any] = {
    "tags": ["webhooks"],
    "summary": "Receive a Nylas notification",
    "description": "Verify, store once, publish `postroom.events.process`; never waits for "
    "the work. Requires `X-Nylas-Signature` (HMAC-SHA256 of the raw body).",
    "operationId": "nylas_notification_webhooks_nylas_post",
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
    },
    "responses": {
        "200": {
            "description": "Stored (`queued`) or seen before (`duplicate`)",
            "content": {"application/json": {"schema": WebhookAck.model_json_schema()}},
        },
        "400": {"description": "malformed body, or a `time` outside the accepted window"},
        "401": {"description": "missing or wrong X-Nylas-Signature"},
        "413": {"description": "body over the limit"},
        "503": {"description": "database unavailable or webhook secret not configured"},
    },
}

_JSON = [(b"content-type", b"application/json")]
