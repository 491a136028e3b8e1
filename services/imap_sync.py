"""Sync an IMAP account into PostgreSQL: folders, new messages, flag changes, expunges.

Per folder the stored (UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ) decide the work. LIST-STATUS gives
them for every folder in one round trip, so a sync with nothing new selects nothing. Messages
are fetched and written in batches, each batch committed with the folder's new UIDNEXT, so
memory stays flat and a sync that dies half-way resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from database.engine import Database
from database.models import Account, Folder
from database.repositories import imap_state as repo
from services.imap import ImapClient, MailboxInfo, SelectInfo
from services.imap_protocol import uid_set
from services.imap_sync_steps import (
    changes_since,
    expunged_by_search,
    flag_values,
    modseq_of,
    resync_new_generation,
)
from services.mail_accounts import account_for_tenant, imap_config
from services.mime import parse
from settings import Settings

Progress = Callable[[int, int], Awaitable[None]]
BATCH = 250
FETCH_ITEMS = "UID FLAGS INTERNALDATE BODY.PEEK[]"  # PEEK: reading must not set \Seen


@dataclass
class SyncResult:
    folders: int = 0
    new: int = 0
    updated: int = 0
    deleted: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": "success",
            "folders": self.folders,
            "new": self.new,
            "updated": self.updated,
            "deleted": self.deleted,
        }


def _internaldate(value: Any) -> datetime | None:
    text = value.decode() if isinstance(value, bytes) else value
    try:
        return datetime.strptime(str(text), "%d-%b-%Y %H:%M:%S %z")
    except ValueError:
        return None


class _Syncer:
    def __init__(
        self,
        db: Database,
        client: ImapClient,
        account: Account,
        progress: Progress | None,
        total: int,
    ) -> None:
        self.db = db
        self.client = client
        self.account = account
        self.progress = progress
        self.total = total
        self.done = 0
        self.result = SyncResult()

    def provider_id(self, folder: Folder, uidvalidity: int, uid: int) -> str:
        return f"{folder.name}:{uidvalidity}:{uid}"

    async def _report(self, n: int) -> None:
        self.done += n
        self.total = max(self.total, self.done)
        if self.progress is not None:
            await self.progress(self.done, self.total)

    def _row(
        self, folder: Folder, uidvalidity: int, attrs: dict[str, Any]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        raw = attrs.get("BODY[]") or b""
        parsed = parse(raw if isinstance(raw, bytes) else b"")
        uid = attrs["UID"]
        msg_id = uuid.uuid4()
        values = parsed.columns()
        values.update(
            id=msg_id,
            tenant_id=self.account.tenant_id,
            account_id=self.account.id,
            folder_id=folder.id,
            provider_id=self.provider_id(folder, uidvalidity, uid),
            imap_uid=uid,
            uidvalidity=uidvalidity,
            modseq=modseq_of(attrs),
            labels=[folder.name],
            bcc_addrs=values["bcc_addrs"],
            sort_at=parsed.date or _internaldate(attrs.get("INTERNALDATE")) or datetime.now(UTC),
            **flag_values(attrs.get("FLAGS")),
        )
        atts = [
            {
                "id": uuid.uuid4(),
                "tenant_id": self.account.tenant_id,
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

    async def _download(self, chunk: list[int], items: str) -> list[dict[str, Any]]:
        return [
            a async for a in self.client.uid_fetch(uid_set(chunk), items) if "VANISHED" not in a
        ]

    async def fetch_uids(self, folder: Folder, info: SelectInfo, uids: list[int]) -> None:
        """Fetch these UIDs in batches; each batch commits with the folder's UIDNEXT so far.

        The next batch downloads while this one is parsed and written (two batches in memory
        at most), so the server, the parser and PostgreSQL work at the same time.
        """
        items = FETCH_ITEMS + (" MODSEQ" if info.highest_modseq else "")
        chunks = [uids[i : i + BATCH] for i in range(0, len(uids), BATCH)]
        pending = asyncio.ensure_future(self._download(chunks[0], items)) if chunks else None
        try:
            for n, chunk in enumerate(chunks):
                assert pending is not None
                fetched = await pending
                pending = (
                    asyncio.ensure_future(self._download(chunks[n + 1], items))
                    if n + 1 < len(chunks)
                    else None
                )
                await self._store(folder, info, chunk, fetched, last=n + 1 == len(chunks))
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending

    async def _store(
        self,
        folder: Folder,
        info: SelectInfo,
        chunk: list[int],
        fetched: list[dict[str, Any]],
        *,
        last: bool,
    ) -> None:
        rows: list[dict[str, Any]] = []
        atts: dict[uuid.UUID, list[dict[str, Any]]] = {}
        for attrs in fetched:
            values, a = self._row(folder, info.uidvalidity, attrs)
            rows.append(values)
            atts[values["id"]] = a
        fetched.clear()
        async with self.db.transaction() as s:
            saved = await repo.upsert_messages(s, rows)
            new_atts: list[dict[str, Any]] = []
            refreshed: list[uuid.UUID] = []
            for values in rows:
                hit = saved.get(values["provider_id"])
                if hit is None:  # a row marked deleted stays deleted
                    continue
                real_id, inserted = hit
                if not inserted:
                    refreshed.append(real_id)
                new_atts.extend({**a, "message_id": real_id} for a in atts[values["id"]])
            self.result.new += len(saved) - len(refreshed)
            self.result.updated += len(refreshed)
            await repo.replace_attachments(
                s, tenant_id=self.account.tenant_id, rows=new_atts, message_ids=refreshed
            )
            # UIDNEXT moves with the data; HIGHESTMODSEQ only once the folder is complete.
            await repo.save_folder_state(
                s,
                tenant_id=self.account.tenant_id,
                folder_id=folder.id,
                uidvalidity=info.uidvalidity,
                uidnext=info.uidnext if last else (max(chunk) + 1),
                highest_modseq=info.highest_modseq if last else folder.highest_modseq,
            )
        await self._report(len(chunk))


async def sync_folder(syncer: _Syncer, folder: Folder, box: MailboxInfo, *, full: bool) -> None:
    """Bring one folder up to date (the caller has decided it may have changed)."""
    client, account = syncer.client, syncer.account
    info = await client.select(box.name)
    if info.uidnext is None:
        info.uidnext = max(await client.uid_search("ALL") or [0]) + 1
    if folder.uidvalidity is not None and folder.uidvalidity != info.uidvalidity:
        await resync_new_generation(syncer, folder, info)
    elif folder.uidvalidity is None or full:
        uids = await client.uid_search("ALL")
        await syncer.fetch_uids(folder, info, uids)
        if folder.uidvalidity is not None:
            await expunged_by_search(syncer, folder, info, server_uids=uids)
    else:
        known_next = folder.uidnext or 1
        if info.uidnext > known_next:
            new = [u for u in await client.uid_search(f"UID {known_next}:*") if u >= known_next]
            await syncer.fetch_uids(folder, info, new)
        await changes_since(syncer, folder, info, known_next=known_next, uids=None)
    async with syncer.db.transaction() as s:
        await repo.save_folder_state(
            s,
            tenant_id=account.tenant_id,
            folder_id=folder.id,
            uidvalidity=info.uidvalidity,
            uidnext=info.uidnext,
            highest_modseq=info.highest_modseq,
        )
    syncer.result.folders += 1


def _same_folder(folder: Folder | None, box: MailboxInfo) -> bool:
    return folder is not None and (folder.provider_id, folder.role, folder.delimiter) == (
        box.name,
        box.role,
        box.delimiter,
    )


def _unchanged(folder: Folder, box: MailboxInfo) -> bool:
    st = box.status
    if not st or folder.uidvalidity is None:
        return False
    same = st.get("UIDVALIDITY") == folder.uidvalidity and st.get("UIDNEXT") == folder.uidnext
    if "HIGHESTMODSEQ" in st:
        return same and st["HIGHESTMODSEQ"] == folder.highest_modseq
    return False  # without CONDSTORE a flag change is invisible here: look inside


def _expected(folder: Folder, box: MailboxInfo) -> int:
    st = box.status
    if folder.uidvalidity is None or st.get("UIDVALIDITY") != folder.uidvalidity:
        return int(st.get("MESSAGES", 0))
    return max(0, int(st.get("UIDNEXT", 0)) - int(folder.uidnext or 0))


async def sync_account(
    db: Database,
    *,
    account: Account,
    client: ImapClient,
    folder: str | None = None,
    full: bool = False,
    progress: Progress | None = None,
    known_folders: list[Folder] | None = None,
) -> SyncResult:
    """Sync every selectable folder (or the one named) of a connected client's account."""
    boxes = [b for b in await client.list_mailboxes() if b.selectable]
    if folder is not None:
        boxes = [b for b in boxes if folder in (b.name, b.display_name)]
    if known_folders is None:
        async with db.transaction() as s:
            known_folders = await repo.folders_of(
                s, tenant_id=account.tenant_id, account_id=account.id
            )
    known = {f.name: f for f in known_folders}
    stale = [b for b in boxes if not _same_folder(known.get(b.display_name), b)]
    if stale:
        async with db.transaction() as s:
            for b in stale:
                known[b.display_name] = await repo.upsert_folder(
                    s,
                    tenant_id=account.tenant_id,
                    account_id=account.id,
                    name=b.display_name,
                    provider_id=b.name,
                    role=b.role,
                    delimiter=b.delimiter,
                )
    rows = [known[b.display_name] for b in boxes]
    work = [
        (row, box) for row, box in zip(rows, boxes, strict=True) if full or not _unchanged(row, box)
    ]
    syncer = _Syncer(db, client, account, progress, total=sum(_expected(r, b) for r, b in work))
    for row, box in work:
        await sync_folder(syncer, row, box, full=full)
    syncer.result.folders = len(boxes)
    return syncer.result


async def run_sync(
    db: Database,
    settings: Settings,
    *,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    folder: str | None = None,
    full: bool = False,
    progress: Progress | None = None,
) -> SyncResult:
    """Load the tenant's account, connect with its credentials, sync, stamp last_sync_at."""
    async with db.transaction() as s:
        account = await account_for_tenant(s, tenant_id=tenant_id, account_id=account_id)
        config = await imap_config(s, settings, account)
        known = await repo.folders_of(s, tenant_id=tenant_id, account_id=account_id)
    async with ImapClient(config) as client:
        result = await sync_account(
            db,
            account=account,
            client=client,
            folder=folder,
            full=full,
            progress=progress,
            known_folders=known,
        )
    async with db.transaction() as s:
        await repo.mark_synced(s, tenant_id=tenant_id, account_id=account_id)
    return result
