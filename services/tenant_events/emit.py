"""The one way an effect records the event it causes: in the effect's own transaction, so an
effect that rolls back tells nobody, and one that commits cannot lose its event."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from database.repositories.accounts import access as accounts_repo
from database.repositories.tenant_events import rows
from services.tenant_events import payloads


class TenantEventType(enum.StrEnum):
    message_created = "message.created"
    message_updated = "message.updated"
    message_deleted = "message.deleted"
    message_classified = "message.classified"
    message_sent = "message.sent"
    message_send_failed = "message.send_failed"
    message_bounced = "message.bounced"
    message_complained = "message.complained"
    account_sync_completed = "account.sync_completed"
    account_auth_failed = "account.auth_failed"
    job_failed = "job.failed"
    webhook_test = "webhook.test"
    webhook_disabled = "webhook.disabled"


async def emit(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    type: TenantEventType,
    data: dict[str, Any],
    event_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Record one event for the tenant; the caller's commit makes it real. A stable
    `event_id` (derived from the effect) makes a repeated emit of the same effect a no-op."""
    (event_id,) = await rows.insert_events(
        session, tenant_id, [(type.value, data)], ids=[event_id] if event_id else None
    )
    return event_id


async def emit_many(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    events: list[tuple[TenantEventType, dict[str, Any]]],
) -> list[uuid.UUID]:
    """Record several events of one tenant with one INSERT (a batch of stored messages)."""
    return await rows.insert_events(session, tenant_id, [(t.value, d) for t, d in events])


async def emit_messages(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    type: TenantEventType,
    message_ids: Sequence[uuid.UUID],
) -> int:
    """One `message.*` event per message, its data the message as the list shows it (read
    in this transaction, so after the effect); a batch costs one read and one INSERT per
    payloads.PAYLOAD_CHUNK messages, never one statement per message. Returns the count."""
    if not message_ids:
        return 0
    found = await payloads.message_payloads(session, tenant_id, list(dict.fromkeys(message_ids)))
    return await _emit_payloads(session, tenant_id, type, found)


async def _emit_payloads(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    type: TenantEventType,
    messages: list[dict[str, Any]],
) -> int:
    await emit_many(session, tenant_id=tenant_id, events=[(type, {"message": m}) for m in messages])
    return len(messages)


async def emit_stored(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    stored: Sequence[tuple[uuid.UUID, bool]],
    before: dict[uuid.UUID, dict[str, Any]] | None = None,
) -> None:
    """`message.created` for the rows an upsert inserted, `message.updated` for those it
    refreshed: the (id, inserted) pairs the message upsert answers, one read and one INSERT
    per kind for the whole batch. With `before` (payloads.payloads_by_provider_id, read
    before the upsert), a refresh that changed nothing the list shows tells nothing: a full
    re-sync re-fetches every message and most of them are as they were."""
    created = [mid for mid, inserted in stored if inserted]
    refreshed = list(dict.fromkeys(mid for mid, inserted in stored if not inserted))
    await emit_messages(
        session, tenant_id=tenant_id, type=TenantEventType.message_created, message_ids=created
    )
    if not refreshed:
        return
    now = await payloads.message_payloads(session, tenant_id, refreshed)
    if before is not None:
        now = [m for m in now if before.get(uuid.UUID(m["id"])) != m]
    await _emit_payloads(session, tenant_id, TenantEventType.message_updated, now)


async def emit_account(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    type: TenantEventType,
) -> bool:
    """An `account.*` event with the account as the API shows it, read in this transaction
    (after the effect: a finished sync's `last_sync_at` is the new one). False when the
    account is gone (deleted meanwhile): nothing to tell."""
    account = await accounts_repo.get_for_tenant(session, tenant_id, account_id)
    if account is None:
        return False
    await session.refresh(account)
    await emit(
        session,
        tenant_id=tenant_id,
        type=type,
        data={"account": payloads.account_payload(account)},
    )
    return True
