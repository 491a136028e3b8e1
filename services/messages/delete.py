"""Deleting messages on the provider, then marking their rows deleted.

IMAP: one command per folder with a UID set. Not permanent: UID MOVE to the Trash folder
(COPY + \\Deleted + UID EXPUNGE without MOVE); permanent, or already in Trash: \\Deleted +
UID EXPUNGE. Nylas: messages.destroy per message (Nylas has no batch delete). POP3 has no
Trash: not permanent only hides the message here; permanent is DELE (services.pop3.delete).

A mass delete runs in bounded parts (`delete_part` with a `Budget`): every part checks that
all the ids are the tenant's, then deletes the next slice of them in chunks until the budget
is spent. The next part goes on from the offset this one reached; a chunk done again after a
crash is harmless (gone UIDs, a 404 at Nylas and unlisted UIDLs are all skipped).
"""

from __future__ import annotations

import contextlib
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database
from database.models import Account, Folder, Message, Provider
from database.repositories.folders import imap_state as state_repo
from database.repositories.messages import rows as messages_repo
from services.accounts.access import account_for_tenant, imap_config, pop3_config
from services.errors import PermissionDenied, ProviderNotFound, ValidationFailed
from services.imap.client import ImapClient, ImapConfig
from services.imap.protocol import uid_set
from services.imap.slots import imap_slot
from services.pop3.client import Pop3Config
from services.pop3.delete import delete_pop3
from services.sync.budget import Budget
from services.tenant_events.emit import TenantEventType, emit_messages
from settings import Settings

# The ids one chunk deletes (one UID command per folder, or this many Nylas calls) before the
# budget is looked at again.
CHUNK = 250


class MessageDestroyer(Protocol):
    async def destroy_message(self, grant_id: str, message_id: str) -> None: ...


async def delete_part(
    db: Database,
    settings: Settings,
    *,
    tenant_id: uuid.UUID,
    message_ids: list[uuid.UUID],
    permanent: bool,
    nylas: MessageDestroyer | None,
    budget: Budget,
    start: int = 0,
) -> tuple[int, int]:
    """(rows marked deleted, the offset in the de-duplicated ids where the next part starts).

    The offset is their count when the delete is over. Any id that is not the tenant's
    refuses the whole delete, in every part, before a server is touched.
    """
    wanted = list(dict.fromkeys(message_ids))
    async with db.transaction() as session:
        await _check_tenant(session, tenant_id, wanted)
    deleted, offset = 0, start
    while offset < len(wanted):
        chunk = wanted[offset : offset + min(CHUNK, max(budget.messages, 1))]
        deleted += await delete_messages(
            db,
            settings,
            tenant_id=tenant_id,
            message_ids=chunk,
            permanent=permanent,
            nylas=nylas,
        )
        offset += len(chunk)
        if budget.spent(offset - start):
            break
    return deleted, offset


async def _check_tenant(session: AsyncSession, tenant_id: uuid.UUID, ids: list[uuid.UUID]) -> None:
    found = await messages_repo.count_for_tenant(session, tenant_id=tenant_id, message_ids=ids)
    if found != len(ids):
        raise PermissionDenied("Some messages do not belong to this tenant.")


@dataclass
class _Plan:
    """One account's part of a delete: everything read before its server is talked to."""

    account: Account
    messages: list[Message]
    imap: ImapConfig | None = None
    pop3: Pop3Config | None = None
    folders: dict[uuid.UUID, Folder] = field(default_factory=dict)


async def delete_messages(
    db: Database,
    settings: Settings,
    *,
    tenant_id: uuid.UUID,
    message_ids: list[uuid.UUID],
    permanent: bool,
    nylas: MessageDestroyer | None,
) -> int:
    """Delete the tenant's messages; any id that is not the tenant's refuses the whole batch.

    Owns its transactions: one short read, then per account the server conversation with no
    transaction open, then a short write marking what that server deleted.
    """
    wanted = list(dict.fromkeys(message_ids))
    async with db.transaction() as s:
        rows = await messages_repo.get_many_for_tenant(s, tenant_id=tenant_id, message_ids=wanted)
        if len(rows) != len(wanted):
            # Checked before any server is touched: nothing of another tenant is even looked at.
            raise PermissionDenied("Some messages do not belong to this tenant.")
        by_account: dict[uuid.UUID, list[Message]] = defaultdict(list)
        for row in rows:
            if row.deleted_at is None:
                by_account[row.account_id].append(row)
        plans = [
            await _plan(s, settings, tenant_id, account_id, messages, permanent=permanent)
            for account_id, messages in by_account.items()
        ]
    deleted = 0
    for plan in plans:
        account = plan.account
        if account.provider == Provider.nylas:
            done = await _delete_nylas(account, plan.messages, nylas)
        elif account.provider == Provider.pop3:
            done = await delete_pop3(plan.pop3, plan.messages, permanent=permanent)
        else:
            done = await _delete_imap(settings, plan, permanent=permanent)
        async with db.transaction() as s:
            marked = await messages_repo.mark_many_deleted(s, tenant_id=tenant_id, message_ids=done)
            await emit_messages(
                s, tenant_id=tenant_id, type=TenantEventType.message_deleted, message_ids=marked
            )
        deleted += len(marked)
    return deleted


async def _plan(
    session: AsyncSession,
    settings: Settings,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    messages: list[Message],
    *,
    permanent: bool,
) -> _Plan:
    account = await account_for_tenant(session, tenant_id=tenant_id, account_id=account_id)
    plan = _Plan(account, messages)
    if account.provider == Provider.pop3:
        if permanent:  # not permanent only hides the rows: no server, no credential
            plan.pop3 = await pop3_config(session, settings, account)
    elif account.provider != Provider.nylas:
        folders = await state_repo.folders_of(
            session, tenant_id=account.tenant_id, account_id=account.id
        )
        plan.folders = {f.id: f for f in folders}
        if any(m.folder_id in plan.folders and m.imap_uid is not None for m in messages):
            plan.imap = await imap_config(session, settings, account)
    return plan


async def _delete_nylas(
    account: Account, messages: list[Message], nylas: MessageDestroyer | None
) -> list[uuid.UUID]:
    if nylas is None or account.grant_id is None:
        raise ValidationFailed("Deleting Nylas messages needs the Nylas API, which is not set up.")
    done = []
    for message in messages:
        # Already gone at Nylas (404): the row should say so too.
        with contextlib.suppress(ProviderNotFound):
            await nylas.destroy_message(account.grant_id, message.provider_id)
        done.append(message.id)
    return done


async def _delete_imap(settings: Settings, plan: _Plan, *, permanent: bool) -> list[uuid.UUID]:
    folders = plan.folders
    trash = next((f for f in folders.values() if f.role == "trash"), None)
    by_folder: dict[uuid.UUID, list[Message]] = defaultdict(list)
    for m in plan.messages:
        if m.folder_id in folders and m.imap_uid is not None:
            by_folder[m.folder_id].append(m)
    if not by_folder:
        return []
    if not permanent and trash is None:
        raise ValidationFailed("The account has no Trash folder; sync it or delete permanently.")
    assert plan.imap is not None  # read by _plan whenever a message has a folder and a UID
    done: list[uuid.UUID] = []
    async with imap_slot(settings, plan.account.id), ImapClient(plan.imap) as client:
        for folder_id, items in by_folder.items():
            folder = folders[folder_id]
            done.extend(await _delete_in_folder(client, folder, items, trash, permanent))
    return done


async def _delete_in_folder(
    client: ImapClient,
    folder: Folder,
    items: list[Message],
    trash: Folder | None,
    permanent: bool,
) -> list[uuid.UUID]:
    info = await client.select(folder.provider_id or folder.name)
    # A UID means nothing under another UIDVALIDITY: those rows wait for the next sync.
    current = [m for m in items if m.uidvalidity == info.uidvalidity]
    if not current:
        return []
    uids = uid_set([m.imap_uid for m in current if m.imap_uid is not None])
    if permanent or trash is None or folder.id == trash.id:
        await client.uid_store(uids, "+FLAGS.SILENT (\\Deleted)")
        await client.uid_expunge(uids)
    elif client.has("MOVE"):
        await client.uid_move(uids, trash.provider_id or trash.name)
    else:
        await client.uid_copy(uids, trash.provider_id or trash.name)
        await client.uid_store(uids, "+FLAGS.SILENT (\\Deleted)")
        await client.uid_expunge(uids)
    return [m.id for m in current]
