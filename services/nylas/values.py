"""Nylas Message objects as postroom's columns: messages, attachments, folder roles, grants."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from database.models import Account
from services.messages.html_text import html_to_text
from services.reports.detect import detect_fields

FOLDER_ROLES = {
    "inbox": "inbox",
    "sent": "sent",
    "sent items": "sent",
    "sent mail": "sent",
    "trash": "trash",
    "deleted items": "trash",
    "spam": "junk",
    "junk": "junk",
    "junk email": "junk",
    "drafts": "drafts",
    "draft": "drafts",
    "archive": "archive",
    "all mail": "archive",
}


def folder_role(name: str) -> str | None:
    return FOLDER_ROLES.get(name.strip().lower().removeprefix("[gmail]/"))


def grant_of(payload: dict[str, Any]) -> str | None:
    """The grant a stored notification names: data.grant_id, else data.object.grant_id (the
    one reading of it; database.repositories.events.batch.GRANT is the same in SQL)."""
    data = payload.get("data")
    if not isinstance(data, dict):
        return None
    obj = data.get("object") if isinstance(data.get("object"), dict) else {}
    grant = data.get("grant_id") or (obj or {}).get("grant_id")
    return grant if isinstance(grant, str) and grant else None


def _addresses(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        return []
    out = []
    for item in value:
        if isinstance(item, dict) and isinstance(item.get("email"), str):
            name = item.get("name")
            out.append(
                {"name": name if isinstance(name, str) and name else None, "email": item["email"]}
            )
    return out


def _timestamp(value: Any) -> datetime | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def message_values(obj: dict[str, Any], *, account: Account, version: int | None) -> dict[str, Any]:
    """Nylas Message object -> message columns (bodies are HTML in Nylas)."""
    sender = _addresses(obj.get("from"))
    date = _timestamp(obj.get("date"))
    html = obj.get("body") if isinstance(obj.get("body"), str) else None
    folders = [f for f in obj.get("folders") or [] if isinstance(f, str)]
    attachments = obj.get("attachments") if isinstance(obj.get("attachments"), list) else []
    values: dict[str, Any] = {
        "tenant_id": account.tenant_id,
        "account_id": account.id,
        "provider_id": obj["id"],
        "provider_version": version,
        "thread_id": obj.get("thread_id"),
        "from_name": sender[0]["name"] if sender else None,
        "from_email": sender[0]["email"] if sender else None,
        "to_addrs": _addresses(obj.get("to")),
        "cc_addrs": _addresses(obj.get("cc")),
        "bcc_addrs": _addresses(obj.get("bcc")),
        "reply_to": _addresses(obj.get("reply_to")),
        "subject": obj.get("subject") if isinstance(obj.get("subject"), str) else None,
        "date": date,
        "sort_at": date or datetime.now(UTC),
        "snippet": obj.get("snippet") if isinstance(obj.get("snippet"), str) else None,
        "html": html,
        "unread": bool(obj.get("unread", False)),
        "starred": bool(obj.get("starred", False)),
        "labels": folders,
        "has_attachments": bool(attachments),
    }
    if html is not None:
        values["text"] = html_to_text(html)
    values["report"] = detect_fields(
        headers=obj.get("headers") if isinstance(obj.get("headers"), list) else None,
        from_email=values["from_email"],
        from_name=values["from_name"],
        subject=values["subject"],
        text=values.get("text"),
    )
    return values


def attachment_values(obj: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for a in obj.get("attachments") or []:
        if not isinstance(a, dict):
            continue
        out.append(
            {
                "provider_id": a.get("id"),
                "filename": a.get("filename"),
                "content_type": a.get("content_type") or "application/octet-stream",
                "size": int(a.get("size") or 0),
                "content_id": a.get("content_id"),
                "is_inline": bool(a.get("is_inline", False)),
            }
        )
    return out
