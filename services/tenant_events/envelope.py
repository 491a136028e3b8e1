"""The one shape of an event as the tenant receives it: the body of a webhook delivery and an
item of `GET /v1/feed` (API.md "Outbound events"): {"id", "type", "timestamp", "seq", "data"}."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.tenant_events.payloads import json_time


def _field(row: Any, name: str) -> Any:
    # The feed reads row mappings, the deliverer TenantEvent objects: one shape from both.
    return row[name] if isinstance(row, Mapping) else getattr(row, name)


def envelope(row: Any) -> dict[str, Any]:
    """A numbered tenant_event row (id, type, created_at, seq, data) -> what the tenant gets.

    `id` is the Standard Webhooks `webhook-id` (the same on every retry and endpoint),
    `timestamp` when the effect committed its event, `seq` its place in the tenant's order."""
    return {
        "id": str(_field(row, "id")),
        "type": _field(row, "type"),
        "timestamp": json_time(_field(row, "created_at")),
        "seq": _field(row, "seq"),
        "data": _field(row, "data"),
    }
