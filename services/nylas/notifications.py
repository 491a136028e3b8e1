"""What a Nylas notification does once a worker has claimed its event (NYLAS.md sections 3-4)."""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database
from database.models import Account, AccountStatus, Event, Provider
from database.repositories.accounts import access as accounts_repo
from database.repositories.messages import rows as messages_repo
from services.errors import ProviderTemporaryError, ValidationFailed
from services.events.outcome import Outcome
from services.events.webhooks import base_type, type_suffixes
from services.nylas.coalesce import Notification
from services.nylas.store import incoming, store_messages

# Re-exported for callers that read Nylas objects through this module.
from services.nylas.values import attachment_values, folder_role, grant_of, message_values
from services.tenant_events.emit import TenantEventType, emit_messages

__all__ = [
    "attachment_values",
    "fetch_truncated",
    "folder_role",
    "message_values",
    "process_notification",
    "store_message",
]


class MessageFetcher(Protocol):
    async def find_message(self, grant_id: str, message_id: str) -> dict[str, Any]: ...


async def store_message(
    session: AsyncSession,
    *,
    account: Account,
    obj: dict[str, Any],
    version: int | None,
    before: dict[uuid.UUID, dict[str, Any]] | None = None,
) -> tuple[uuid.UUID, bool] | None:
    """Upsert a Nylas Message object with its folders and attachment metadata.

    (id, inserted), or None when the message is deleted here or a newer state is stored.
    Webhooks, sync and the Nylas send path all store messages through this one function,
    and tell the tenant (`message.created` or `.updated`; with `before`, a sync's snapshot,
    an update that changed nothing listed tells nothing): the set-based path
    (services.nylas.store) with one message.
    """
    message = incoming(obj, account=account, version=version)
    saved = await store_messages(session, account=account, messages=[message], before=before)
    return saved[0]


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
    return grant_of(body), obj


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
        message_id, was_live = await messages_repo.mark_deleted(
            session,
            tenant_id=account.tenant_id,
            account_id=account.id,
            provider_id=obj["id"],
            provider_version=version,
        )
        if was_live:  # a tombstone for a message the tenant never saw tells nothing
            await emit_messages(
                session,
                tenant_id=account.tenant_id,
                type=TenantEventType.message_deleted,
                message_ids=[message_id],
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
