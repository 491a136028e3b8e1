"""The body every delivery and the feed carry for one tenant event (API.md "Outbound events")."""

from __future__ import annotations

from typing import Any


def envelope(row: Any) -> dict[str, Any]:
    """`{"id", "type", "timestamp", "seq", "data"}` of a numbered tenant_event row."""
    return {
        "id": str(row.id),
        "type": row.type,
        "timestamp": row.created_at.isoformat(),
        "seq": row.seq,
        "data": row.data,
    }
