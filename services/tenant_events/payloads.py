"""Payloads of tenant events: ids and the objects as the API lists them, never bodies or
credentials (API.md "Outbound events")."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from database.models import Account


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def account_payload(account: Account) -> dict[str, Any]:
    """The account as `GET /v1/accounts/{id}` shows it."""
    return {
        "id": str(account.id),
        "provider": str(account.provider),
        "email": account.email,
        "status": str(account.status),
        "sync_interval_s": account.sync_interval_s,
        "last_sync_at": _iso(account.last_sync_at),
        "created_at": _iso(account.created_at),
    }
