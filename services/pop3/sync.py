"""Sync a POP3 account into PostgreSQL: one folder, INBOX, keyed by the server's UIDLs.

POP3 (RFC 1939) has no folders, flags or change notifications, only a numbered maildrop whose
messages have unique ids (UIDL). A sync lists those ids, downloads the ones never stored
(rows marked deleted here included: they stay on the server and are not fetched again),
and marks deleted the stored ones that are no longer listed. Nothing is removed from the
server by a sync. Messages are stored exactly as IMAP ones are: the same MIME parse
(services.messages.mime) and the same batch upsert and attachment writes (imap_state repository),
one transaction per batch, so a sync that dies half-way resumes where it stopped.

With a `Budget` the sync is cut into parts like an IMAP one: it stops after the batch that
spends it (`SyncResult.cut`). The next part needs no resume point: it lists UIDL again and
skips what the earlier parts stored.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from database.engine import Database
from database.models import Account, Folder
from database.repositories.folders import imap_state as repo
from database.repositories.folders import pop3_state
from database.repositories.messages import rows as messages_repo
from services.accounts.access import account_for_tenant, pop3_config
from services.errors import ValidationFailed
from services.messages.mime import parse
from services.pop3.client import Pop3Client, Pop3CommandError
from services.reports.ingest import record_stored, wants_recording
from services.sync.budget import Budget
from services.sync.result import SyncResult
from services.tenant_events.emit import (
    TenantEventType,
    emit_account,
    emit_messages,
    emit_stored,
)
from settings import Settings

Progress = Callable[[int, int], Awaitable[None]]
INBOX = "INBOX"
BATCH = 100
# A batch holds at most this much message data (a single larger message is a batch alone).
BATCH_BYTES = 16 * 1024 * 1024

log = structlog.get_logger(__name__)


def plan(new: list[tuple[int, str]], sizes: dict[int, int], cap: int) -> list[list[int]]:
    """Message numbers cut into batches by count and bytes; over-cap ones go alone."""
    batches: list[list[int]] = []
    run: list[int] = []
    run_bytes = 0
    for number, _ in new:
        size = sizes.get(number, 0)
        if size > cap:
            batches.append([number])
            continue
        if run and (len(run) >= BATCH or run_bytes + size > BATCH_BYTES):
            batches.append(run)
            run, run_bytes = [], 0
        run.append(number)
        run_bytes += size
    if run:
        batches.append(run)
    return batches


def message_rows(
    account: Account,
    folder: Folder,
    raw: bytes,
    *,
    provider_id: str,
    warnings: list[str] | None = None,
    headers_only: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The `message` row and attachment rows of one downloaded message."""
    parsed = parse(raw)
    if headers_only:
        # The header's blank line is no body: text and parts stay unknown, not empty.
        parsed.text = parsed.html = parsed.snippet = None
        parsed.attachments = []
    msg_id = uuid.uuid4()
    values = parsed.columns()
    values.update(
        id=msg_id,
        tenant_id=account.tenant_id,
        account_id=account.id,
        folder_id=folder.id,
        provider_id=provider_id,
        labels=[folder.name],
        sort_at=parsed.date or datetime.now(UTC),
        # POP3 keeps no flags: everything arrives unread and unstarred.
        flags=[],
        unread=True,
        starred=False,
    )
    if warnings:
        values["parse_warnings"] = [*values["parse_warnings"], *warnings]
    atts = [
        {
            "id": uuid.uuid4(),
            "tenant_id": account.tenant_id,
            "message_id": msg_id,
            "filename": a.filename,
            "content_type": a.content_type,
            "size": a.size,
            "sha256": a.sha256,
            "content_id": a.content_id,
            "is_inline": a.is_inline,
            "content": a.content,
        }
        for a in parsed.attachments
    ]
    return values, atts


class _Pop3Syncer:
    def __init__(self, db: Database, client: Pop3Client, account: Account, folder: Folder) -> None:
        self.db = db
        self.client = client
        self.account = account
        self.folder = folder
        self.result = SyncResult(folders=1)

    async def download(self, batch: list[int], ids: dict[int, str], sizes: dict[int, int]) -> None:
        """Fetch one batch and store it in one transaction."""
        cap = self.client.config.max_message_bytes
        rows: list[dict[str, Any]] = []
        atts: dict[uuid.UUID, list[dict[str, Any]]] = {}
        raws: list[bytes | None]
        warning: list[str] = []
        if len(batch) == 1 and sizes.get(batch[0], 0) > cap:
            raws = [await self._headers_only(batch[0])]
            warning = [
                f"the message is {sizes[batch[0]]} bytes, over the {cap}-byte cap: "
                "only its header is stored"
            ]
        else:
            raws = await self.client.retrieve(batch)
        for number, raw in zip(batch, raws, strict=True):
            if raw is None:
                # Refused by the server (-ERR): not stored, so the next sync tries again.
                log.warning("pop3_message_refused", account_id=str(self.account.id), number=number)
                continue
            values, a = message_rows(
                self.account,
                self.folder,
                raw,
                provider_id=ids[number],
                warnings=warning,
                headers_only=bool(warning),
            )
            if warning:
                values["size"] = sizes[number]
            rows.append(values)
            atts[values["id"]] = a
        raws.clear()
        async with self.db.transaction() as s:
            saved = await repo.upsert_messages(s, rows)
            new_atts: list[dict[str, Any]] = []
            refreshed: list[uuid.UUID] = []
            reports: list[tuple[uuid.UUID, dict[str, Any]]] = []
            for values in rows:
                hit = saved.get(values["provider_id"])
                if hit is None:  # a row marked deleted stays deleted
                    continue
                real_id, inserted = hit
                if not inserted:
                    refreshed.append(real_id)
                elif wants_recording(values):
                    reports.append((real_id, values))
                new_atts.extend({**a, "message_id": real_id} for a in atts[values["id"]])
            self.result.new += len(saved) - len(refreshed)
            self.result.updated += len(refreshed)
            await messages_repo.replace_attachments(
                s, tenant_id=self.account.tenant_id, message_ids=refreshed, rows=new_atts
            )
            await emit_stored(s, tenant_id=self.account.tenant_id, stored=list(saved.values()))
            await record_stored(s, tenant_id=self.account.tenant_id, stored=reports)

    async def _headers_only(self, number: int) -> bytes | None:
        if not self.client.has("TOP"):
            # Without TOP the header cannot be had alone: the row says what it is.
            return b""
        try:
            return await self.client.headers(number)
        except Pop3CommandError:
            return None


async def inbox_folder(db: Database, account: Account) -> Folder:
    """The account's one folder (created on the first sync)."""
    async with db.transaction() as s:
        for folder in await repo.folders_of(s, tenant_id=account.tenant_id, account_id=account.id):
            if folder.name == INBOX:
                return folder
        return await repo.upsert_folder(
            s,
            tenant_id=account.tenant_id,
            account_id=account.id,
            name=INBOX,
            provider_id=INBOX,
            role="inbox",
            delimiter=None,
        )


async def sync_maildrop(
    db: Database,
    *,
    account: Account,
    client: Pop3Client,
    progress: Progress | None = None,
    budget: Budget | None = None,
) -> SyncResult:
    """Bring INBOX up to date with a connected client's maildrop (or a budget's part of it)."""
    folder = await inbox_folder(db, account)
    listing = await client.uidl()
    sizes = await client.list_sizes()
    async with db.transaction() as s:
        known = await pop3_state.known_ids(s, tenant_id=account.tenant_id, folder_id=folder.id)
    on_server = {uidl for _, uidl in listing}
    ids: dict[int, str] = {}
    new: list[tuple[int, str]] = []
    seen: set[str] = set()
    for number, uidl in listing:
        if uidl not in known and uidl not in seen:  # a UIDL listed twice is fetched once
            seen.add(uidl)
            ids[number] = uidl
            new.append((number, uidl))
    syncer = _Pop3Syncer(db, client, account, folder)
    gone = [pid for pid, live in known.items() if live and pid not in on_server]
    async with db.transaction() as s:
        marked = await pop3_state.mark_gone(
            s, tenant_id=account.tenant_id, folder_id=folder.id, provider_ids=gone
        )
        await emit_messages(
            s, tenant_id=account.tenant_id, type=TenantEventType.message_deleted, message_ids=marked
        )
    syncer.result.deleted += len(marked)
    done = 0
    batches = plan(new, sizes, client.config.max_message_bytes)
    for i, batch in enumerate(batches, 1):
        await syncer.download(batch, ids, sizes)
        done += len(batch)
        if progress is not None:
            await progress(done, len(new))
        if i < len(batches) and budget is not None and budget.spent(done):
            syncer.result.cut = True  # each batch is committed: the next part lists UIDL anew
            return syncer.result
    async with db.transaction() as s:
        await repo.save_folder_state(
            s,
            tenant_id=account.tenant_id,
            folder_id=folder.id,
            uidvalidity=None,
            uidnext=None,
            highest_modseq=None,
        )
    return syncer.result


async def run_pop3_sync(
    db: Database,
    settings: Settings,
    *,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    folder: str | None = None,
    progress: Progress | None = None,
    budget: Budget | None = None,
) -> SyncResult:
    """Load the tenant's POP3 account, connect with its credentials, sync, stamp last_sync_at.

    A part cut by `budget` does not stamp last_sync_at (the sync is not over).
    """
    if folder is not None and folder != INBOX:
        raise ValidationFailed("A POP3 account has one folder, INBOX.")
    async with db.transaction() as s:
        account = await account_for_tenant(s, tenant_id=tenant_id, account_id=account_id)
        config = await pop3_config(s, settings, account)
    async with Pop3Client(config) as client:
        result = await sync_maildrop(
            db, account=account, client=client, progress=progress, budget=budget
        )
    if not result.cut:
        async with db.transaction() as s:
            await repo.mark_synced(s, tenant_id=tenant_id, account_id=account_id)
            await emit_account(
                s,
                tenant_id=tenant_id,
                account_id=account_id,
                type=TenantEventType.account_sync_completed,
            )
    return result
