"""Bodies of /v1/webhooks: tenants' own endpoints for outbound events (API.md "Outbound events")."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.common import Strict
from services.tenant_events.url_policy import MAX_URL_CHARS

_TYPES = "Event types sent to this endpoint; null: every type."


class WebhookEndpointIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "url": "https://app.example.com/postroom-events",
                    "event_types": ["message.created", "message.sent"],
                    "description": "production",
                }
            ]
        },
    )
    url: str = Field(max_length=MAX_URL_CHARS)
    event_types: list[str] | None = Field(default=None, max_length=50, description=_TYPES)
    description: str | None = Field(default=None, max_length=500)


class WebhookEndpointPatch(Strict):
    url: str | None = Field(default=None, max_length=MAX_URL_CHARS)
    event_types: list[str] | None = Field(default=None, max_length=50, description=_TYPES)
    description: str | None = Field(default=None, max_length=500)
    status: Literal["active", "disabled"] | None = None


class WebhookEndpointPublic(BaseModel):
    id: str
    url: str
    event_types: list[str] | None
    description: str | None
    status: Literal["active", "disabled"]
    created_at: datetime


class WebhookEndpointCreated(WebhookEndpointPublic):
    secret: str = Field(description="`whsec_` + base64; shown only here and on rotation.")


class WebhookEndpointList(BaseModel):
    data: list[WebhookEndpointPublic]


class WebhookSecret(BaseModel):
    secret: str


class WebhookAccepted(BaseModel):
    status: Literal["accepted"] = "accepted"
    event_id: str | None = None
    count: int | None = None


class DeliveryPublic(BaseModel):
    id: str
    event_id: str
    event_type: str
    status: Literal["pending", "retrying", "succeeded", "failed"]
    attempts: int
    last_status_code: int | None
    next_attempt_at: datetime | None
    created_at: datetime


class DeliveryPage(BaseModel):
    data: list[DeliveryPublic]
    next_cursor: str | None


class RecoverIn(Strict):
    since: datetime
