"""The tenant event as the feed and webhook deliveries carry it (API.md "Outbound events")."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class TenantEventPublic(BaseModel):
    id: str = Field(description="The event's id; a webhook delivery's `webhook-id`")
    type: str = Field(examples=["message.created"])
    timestamp: str = Field(description="When the effect that caused it committed (UTC)")
    seq: int = Field(description="Its place in the tenant's order: 1, 2, 3... with no gaps")
    data: dict[str, Any]


class FeedPage(BaseModel):
    data: list[TenantEventPublic]
    next_after: int = Field(description="The `after` to ask with next")
