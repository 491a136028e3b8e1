"""A message as the API lists it: the one shaping that `GET /v1/messages`, the detail and the
`message.*` tenant events share (services/tenant_events/payloads.py), so they cannot drift."""

from __future__ import annotations

from typing import Any

from services.reports.model import public_of


def _addresses(items: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [
        {"name": i.get("name"), "email": i.get("email")} for i in items or [] if isinstance(i, dict)
    ]


def message_fields(r: Any) -> dict[str, Any]:
    """A row of the list query's columns (LIST_COLUMNS plus `folder`, and `deleted_at` when
    selected) -> the listed message, with `date` still a datetime."""
    sender = None
    if r["from_name"] is not None or r["from_email"] is not None:
        sender = {"name": r["from_name"], "email": r["from_email"]}
    spam = None
    if r["is_spam"] is not None:
        spam = {
            "is_spam": r["is_spam"],
            "score": r["spam_score"],
            "indicators": r["spam_indicators"] or [],
        }
    deleted = r.get("deleted_at") is not None
    return {
        "id": str(r["id"]),
        "account_id": str(r["account_id"]),
        "folder": r["folder"],
        "provider_id": r["provider_id"],
        "message_id_header": r["message_id_header"],
        "thread_id": r["thread_id"],
        "from": sender,
        "to": _addresses(r["to_addrs"]),
        "cc": _addresses(r["cc_addrs"]),
        "subject": r["subject"],
        "date": r["date"],
        "snippet": r["snippet"],
        "unread": r["unread"],
        "starred": r["starred"],
        "has_attachments": r["has_attachments"],
        "spam": spam,
        "category": r["category"],
        "deleted": deleted,
        "too_large": r["too_large"],
        "report": public_of(r.get("report")),
    }
