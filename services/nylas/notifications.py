"""What a Nylas notification does once a worker has claimed its event (NYLAS.md sections 3-4)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database
from database.models import Account, AccountStatus, Event, Provider
from database.repositories.accounts import access as accounts_repo
from database.repositories.messages import rows as messages_repo
from database.repositories.messages import threads as threads_repo
from services.errors import ProviderTemporaryError, ValidationFailed
from services.events.webhooks import base_type, type_suffixes
from services.messages.html_text import html_to_text
from services.nylas.coalesce import Notification


class MessageFetcher(Protocol):
    async def find_message(self, grant_id: str, message_id: str) -> dict[str, Any]: ...


@dataclass
class Outcome:
    """How an event ended: `succeeded` with a result, or `ignored` with the reason."""

    status: str
    result: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    tenant_id: uuid.UUID | None = None
    account_id: uuid.UUID | None = None
    # Ids of messages created or changed, for the classify chain.
    message_ids: list[uuid.UUID] = field(default_factory=list)

    @classmethod
    def ignored(cls, reason: str, account: Account | None = None) -> Outcome:
        return cls(
            status="ignored",
            reason=reason,
            result={"status": "ignored", "reason": reason},
            tenant_id=account.tenant_id if account else None,
            account_id=account.id if account else None,
        )

    @classmethod
    def stored(cls, message_id: uuid.UUID, inserted: bool, account: Account) -> Outcome:
        """A message stored from a notification: new, or an update of the row we had."""
        return cls(
            status="succeeded",
            result={
                "status": "success",
                "message_id": str(message_id),
                "action": "created" if inserted else "updated",
            },
            tenant_id=account.tenant_id,
            account_id=account.id,
            message_ids=[message_id],
        )


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


def _grant_id(data: dict[str, Any]) -> str | None:
    obj = data.get("object") if isinstance(data.get("object"), dict) else {}
    grant = data.get("grant_id") or (obj or {}).get("grant_id")
    return grant if isinstance(grant, str) and grant else None


def grant_of(payload: dict[str, Any]) -> str | None:
    """The grant a stored notification names (data.grant_id or data.object.grant_id)."""
    data = payload.get("data")
    return _grant_id(data) if isinstance(data, dict) else None


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


async def store_message(
    session: AsyncSession, *, account: Account, obj: dict[str, Any], version: int | None
) -> tuple[uuid.UUID, bool] | None:
    """Upsert a Nylas Message object with its folders and attachment metadata.

    (id, inserted), or None when the message is deleted here or a newer state is stored.
    Webhooks, sync and the Nylas send path all store messages through this one function.
    """
    values = message_values(obj, account=account, version=version)
    folder_names = values["labels"]
    folder_ids = await messages_repo.ensure_folders(
        session,
        tenant_id=account.tenant_id,
        account_id=account.id,
        folders=[{"name": n, "provider_id": n, "role": folder_role(n)} for n in folder_names],
    )
    if folder_names:
        values["folder_id"] = folder_ids[folder_names[0]]
    values["thread_id"] = await threads_repo.provider_thread(session, values)
    saved = (await messages_repo.upsert_many(session, [values])).get(values["provider_id"])
    if saved is not None:
        await messages_repo.replace_attachments(
            session,
            tenant_id=account.tenant_id,
            message_ids=[saved[0]],
            rows=[{**a, "message_id": saved[0]} for a in attachment_values(obj)],
        )
    return saved


async def _upsert_message(
    session: AsyncSession,
    *,
    account: Account,
    obj: dict[str, Any],
    version: int | None,
) -> Outcome:
    saved = await store_message(session, account=account, obj=obj, version=version)
    if saved is None:
        return Outcome.ignored("the message was deleted or a newer state is stored", account)
    return Outcome.stored(*saved, account)


def _truncated(event: Event | Notification, obj: dict[str, Any] | None) -> bool:
    """A message notification without its body: the message must be fetched from Nylas."""
    return obj is not None and (
        "truncated" in type_suffixes(event.type) or not isinstance(obj.get("body"), str)
    )


def _parts(event: Event | Notification) -> tuple[str | None, dict[str, Any] | None]:
    """(the grant id, data.object) of a stored notification."""
    body = event.payload
    data = body.get("data") if isinstance(body.get("data"), dict) else {}
    assert isinstance(data, dict)
    obj = data.get("object") if isinstance(data.get("object"), dict) else None
    return _grant_id(data), obj


def owner_changed(event: Event | Notification, account: Account) -> bool:
    """Whether the notification was stored for (or first applied to) another tenant than the
    one that owns its grant now."""
    stored = getattr(event, "tenant_id", None)
    return stored is not None and stored != account.tenant_id


async def fetch_truncated(
    db: Database, *, event: Event | Notification, nylas: MessageFetcher | None
) -> dict[str, Any] | None:
    """The whole Message a truncated `message.*` notification left out, else None.

    Fetched before the processing transaction begins, with no transaction open while Nylas
    answers (docs/architecture.md, "Transactions"); the grant is looked up first in a short
    read, so no unknown grant is ever asked about. Most notifications carry the body and
    cost nothing here.
    """
    grant_id, obj = _parts(event)
    if base_type(event.type) not in ("message.created", "message.updated") or grant_id is None:
        return None
    if obj is None or not isinstance(obj.get("id"), str) or not obj["id"]:
        return None
    if nylas is None or not _truncated(event, obj):
        return None
    async with db.transaction() as s:
        account = await accounts_repo.get_live_by_grant(s, grant_id)
    if account is None or account.provider != Provider.nylas:
        return None
    if owner_changed(event, account):
        return None  # refused by process_notification: nothing is fetched for the new owner
    # Known from here on, even if the fetch fails: the dead letter must belong to the tenant.
    event.tenant_id, event.account_id = account.tenant_id, account.id
    return await nylas.find_message(grant_id, obj["id"])


async def process_notification(
    session: AsyncSession,
    *,
    event: Event | Notification,
    nylas_configured: bool,
    fetched: dict[str, Any] | None = None,
) -> Outcome:
    """Route one stored notification by its base type and apply it (one step of the
    caller's transaction; a truncated message comes in `fetched`, see fetch_truncated)."""
    body = event.payload
    grant_id, obj = _parts(event)
    kind = base_type(event.type)
    version = body.get("time") if isinstance(body.get("time"), int) else None

    if kind not in HANDLED_TYPES:
        return Outcome.ignored(f"no handler for notification type {kind!r}")
    if grant_id is None:
        return Outcome.ignored("the notification names no grant")
    account = await accounts_repo.get_live_by_grant(session, grant_id)
    if account is None:
        return Outcome.ignored(f"unknown grant {grant_id!r}")
    if owner_changed(event, account):
        # A grant moved to another tenant since this notification was stored (a replay, or a
        # retry): it is never applied to the new owner's mailbox. The event stays the first
        # tenant's, and so does any dead letter.
        return Outcome.ignored("the grant now belongs to another tenant")
    # Known from here on, even if the work fails: the dead letter must belong to the tenant.
    event.tenant_id, event.account_id = account.tenant_id, account.id

    if kind in ("grant.expired", "grant.deleted"):
        await accounts_repo.set_status(
            session, account.id, AccountStatus.reauth_required, f"Nylas sent {kind}"
        )
        return Outcome(
            status="succeeded",
            result={"status": "success", "account_status": AccountStatus.reauth_required.value},
            tenant_id=account.tenant_id,
            account_id=account.id,
        )

    if obj is None or not isinstance(obj.get("id"), str) or not obj["id"]:
        raise ValidationFailed("The notification has no data.object.id.")
    if account.provider != Provider.nylas:
        return Outcome.ignored("the grant belongs to a non-Nylas account", account)

    if kind == "message.deleted":
        message_id = await messages_repo.mark_deleted(
            session,
            tenant_id=account.tenant_id,
            account_id=account.id,
            provider_id=obj["id"],
            provider_version=version,
        )
        return Outcome(
            status="succeeded",
            result={"status": "success", "message_id": str(message_id), "action": "deleted"},
            tenant_id=account.tenant_id,
            account_id=account.id,
        )

    # message.created / message.updated are both upserts (providers send either for both).
    if _truncated(event, obj):
        if not nylas_configured:
            raise ValidationFailed(
                "A truncated message needs the Nylas API, which is not configured."
            )
        if fetched is None:  # the grant's account appeared between the fetch and now
            raise ProviderTemporaryError("The account changed while its message was fetched.")
        obj = fetched
    return await _upsert_message(session, account=account, obj=obj, version=version)


HANDLED_TYPES = frozenset(
    {"message.created", "message.updated", "message.deleted", "grant.expired", "grant.deleted"}
)
