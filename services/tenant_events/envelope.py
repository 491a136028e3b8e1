"""The one shape of an event as the tenant receives it: the body of a webhook delivery and an
item of `GET /v1/feed` (API.md "Outbound events"): {"id", "type", "timestamp", "seq", "data"}."""

from __future__ import annotations

from typing import Any

from services.tenant_events.payloads import json_time


def envelope(row: Any) -> dict[str, Any]:
    """A numbered tenant_event row (id, type, created_at, seq, data) -> what the tenant gets.

    `id` is the Standard Webhooks `webhook-id` (the same on every retry and endpoint),
    `timestamp` when the effect committed its event, `seq` its place in the tenant's order."""
    return {
        "id": str(row["id"]),
        "type": row["type"],
        "timestamp": json_time(row["created_at"]),
        "seq": row["seq"],
        "data": row["data"],
    }
