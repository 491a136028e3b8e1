"""Sync an IMAP account into PostgreSQL: folders, new messages, flag changes, expunges.

Per folder the stored (UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ) decide the work. LIST-STATUS gives
them for every folder in one round trip, so a sync with nothing new selects nothing. Messages
are fetched and written in batches, each batch committed with the folder's new UIDNEXT, so
memory stays flat and a sync that dies half-way resumes where it stopped.

The same stored state cuts a long sync into parts: with a `Budget`, the sync stops after the
batch that spends it (messages or seconds) and says so (`SyncResult.cut`, the folders it
finished and the one it was in); the next part, given that as `resume`, goes on from the
folder's committed UIDNEXT. Only new-message fetching is cut: flag and expunge passes and a
new UIDVALIDITY generation always run to their end.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from array import array
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database
from database.models import Account, Folder
from database.repositories.folders import imap_state as repo
from database.repositories.messages import rows as messages_repo
from services.accounts.access import account_for_tenant, imap_config
from services.errors import ProviderTemporaryError, database_gone
from services.imap import rows
from services.imap.client import ImapClient, ImapProtocolViolation, MailboxInfo, SelectInfo
from services.imap.protocol import UidSet, uid_set
from services.imap.rows import build, declared_size, record, unstorable
from services.imap.slots import imap_slot
from services.imap.sync_steps import changes_since, expunged_by_search, resync_new_generation
from services.reports.ingest import record_stored, wants_recording
from services.sync.budget import Budget as Budget
from services.sync.result import SyncResult as SyncResult
from services.tenant_events.emit import TenantEventType, emit_account, emit_stored
from services.tenant_events.payloads import payloads_by_provider_id
from settings import Settings

Progress = Callable[[int, int], Awaitable[None]]
BATCH = 250
# A batch of BATCH messages of at most this holds 64 MiB; larger ones come one at a time.
SMALL_BYTES = 256 * 1024
FETCH_ITEMS = "UID FLAGS INTERNALDATE BODY.PEEK[]"  # PEEK: reading must not set \Seen
# Over POSTROOM_MAX_MESSAGE_BYTES: the header and the size, never the body.
HEADER_ITEMS = "UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER]"
# New connections a folder sync may open after answers that broke the protocol.
MAX_REDIALS = 10
_BROKEN = "the server broke the protocol answering for this message"
_FRAMING = 4096  # FLAGS, INTERNALDATE and the like around each body


class BudgetSpent(Exception):
    """The part's budget ran out between two batches; its progress is committed."""


@dataclass
class Batch:
    """UIDs fetched in one command and stored in one transaction, in ascending order."""

    uids: list[int]
    headers_only: bool = False  # declared over POSTROOM_MAX_MESSAGE_BYTES


def plan(uids: Sequence[int], sizes: Sequence[int], cap: int) -> list[Batch]:
    """Cut the UIDs into batches whose bodies fit in memory whatever the server holds.

    Up to BATCH messages of at most SMALL_BYTES ride together; a larger one (or one whose
    size is unknown, -1) is a batch of its own, and one over `cap` is fetched as header only.
    """
    out: list[Batch] = []
    run: list[int] = []
    for uid, size in zip(uids, sizes, strict=True):
        if 0 <= size <= SMALL_BYTES:
            run.append(uid)
            if len(run) == BATCH:
                out.append(Batch(run))
                run = []
            continue
        if run:
            out.append(Batch(run))
            run = []
        out.append(Batch([uid], headers_only=size > cap))
    if run:
        out.append(Batch(run))
    return out


class _Syncer:
    def __init__(
        self,
        db: Database,
        client: ImapClient,
        account: Account,
        progress: Progress | None,
        total: int,
        budget: Budget | None = None,
    ) -> None:
        self.db = db
        self.client = client
        self.account = account
        self.progress = progress
        self.total = total
        self.done = 0
        self.redials = 0
        self.cap = client.config.max_message_bytes
        self.result = SyncResult()
        self.budget = budget
        # Set around the new-message fetches only: the passes that must finish are never cut.
        self.may_cut = False
        # A full re-sync fetches known messages again: only then can a batch refresh rows, and
        # only then is what they were read first, so an unchanged one tells nothing.
        self.refetch = False

    def spent(self) -> bool:
        return self.budget is not None and self.budget.spent(self.done)

    def provider_id(self, folder: Folder, uidvalidity: int, uid: int) -> str:
        return rows.provider_id(folder.name, uidvalidity, uid)

    async def _report(self, n: int) -> None:
        self.done += n
        self.total = max(self.total, self.done)
        if self.progress is not None:
            await self.progress(self.done, self.total)

    async def _sizes(self, specs: list[str], floor: int) -> tuple[array[int], array[int]]:
        """UID and RFC822.SIZE (-1 when unknown) of every message the server answers for.

        The server pays a FETCH answer per UID, so a claim like `1:4294967295` costs us only
        the messages it really sends; two arrays hold a million of them in 16 MB.
        """
        uids, sizes = array("q"), array("q")
        for spec in specs:
            async for attrs in self.client.uid_fetch(spec, "UID RFC822.SIZE"):
                if "VANISHED" in attrs or attrs["UID"] < floor:
                    continue  # `n:*` also names the last message when its UID is below n
                uids.append(attrs["UID"])
                size = declared_size(attrs)
                sizes.append(-1 if size is None else size)
        if any(uids[i] >= uids[i + 1] for i in range(len(uids) - 1)):
            pairs = sorted(dict(zip(uids, sizes, strict=True)).items())
            uids, sizes = array("q", (u for u, _ in pairs)), array("q", (z for _, z in pairs))
        return uids, sizes

    async def _download(self, batch: Batch, modseq: bool) -> list[dict[str, Any]]:
        items = HEADER_ITEMS if batch.headers_only else FETCH_ITEMS
        items += " MODSEQ" if modseq else ""
        # What the planned batch may weigh (sizes as declared, plus framing); more is a lie.
        each = SMALL_BYTES if len(batch.uids) > 1 else self.client.max_literal
        budget = len(batch.uids) * (each + _FRAMING)
        return [
            a
            async for a in self.client.uid_fetch(uid_set(batch.uids), items, max_bytes=budget)
            if "VANISHED" not in a
        ]

    async def _redial(self, folder: Folder, info: SelectInfo) -> None:
        """A new connection after a broken answer, back in the same folder and generation."""
        self.redials += 1
        if self.redials > MAX_REDIALS:
            raise ProviderTemporaryError(
                "The IMAP server broke the protocol too often during this sync; it will be retried."
            )
        await self.client.reopen()
        again = await self.client.select(folder.provider_id or folder.name)
        if again.uidvalidity != info.uidvalidity:
            raise ProviderTemporaryError("The folder's UIDVALIDITY changed during the sync.")

    async def fetch_uids(
        self, folder: Folder, info: SelectInfo, specs: list[str], *, floor: int = 1
    ) -> UidSet:
        """Fetch the messages of these UID sets in batches; each commits with its UIDNEXT.

        The next batch downloads while this one is parsed and written (two batches in memory
        at most), so the server, the parser and PostgreSQL work at the same time. A batch
        whose answer breaks the protocol is fetched again one message at a time, on a new
        connection; a message that breaks it alone is stored with its problem. Answers: the
        UIDs the server listed.
        """
        uids, sizes = await self._sizes(specs, floor)
        queue = deque(plan(uids, sizes, self.cap))
        modseq = bool(info.highest_modseq)

        def start() -> asyncio.Future[list[dict[str, Any]]] | None:
            return asyncio.ensure_future(self._download(queue[0], modseq)) if queue else None

        pending = start()
        try:
            while queue:
                assert pending is not None
                batch = queue.popleft()
                try:
                    fetched = await pending
                except ImapProtocolViolation:
                    pending = None
                    await self._redial(folder, info)
                    if len(batch.uids) > 1:
                        queue.extendleft(Batch([u], batch.headers_only) for u in batch.uids[::-1])
                        pending = start()
                        continue
                    fetched = [{"UID": batch.uids[0], "PROBLEM": _BROKEN}]
                pending = start()
                await self._store(folder, info, batch, fetched, last=not queue)
                if queue and self.may_cut and self.spent():
                    raise BudgetSpent  # the finally drops the download in flight
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending
        return UidSet.of(uids)

    async def _store(
        self,
        folder: Folder,
        info: SelectInfo,
        batch: Batch,
        fetched: list[dict[str, Any]],
        *,
        last: bool,
    ) -> None:
        built = []
        for attrs in fetched:
            values, atts, problem = build(
                account=self.account,
                folder=folder,
                uidvalidity=info.uidvalidity,
                attrs=attrs,
                headers_only=batch.headers_only,
                cap=self.cap,
            )
            if problem is not None:
                record(problem, account=self.account, folder=folder, uid=attrs["UID"])
            built.append((values, atts))
        fetched.clear()
        # UIDNEXT moves with the data; HIGHESTMODSEQ only once the folder is complete.
        state: dict[str, Any] = {
            "tenant_id": self.account.tenant_id,
            "folder_id": folder.id,
            "uidvalidity": info.uidvalidity,
            "uidnext": info.uidnext if last else (max(batch.uids) + 1),
            "highest_modseq": info.highest_modseq if last else folder.highest_modseq,
        }
        try:
            async with self.db.transaction() as s:
                counts = await self._write(s, built)
                await repo.save_folder_state(s, **state)
            self._count(*counts)
        except DBAPIError as exc:
            if database_gone(exc) or len(built) == 0:
                raise
            # One row PostgreSQL refuses must not hold back the others: one by one, and the
            # refused one is kept as its keys plus the problem.
            for values, atts in built:
                await self._store_alone(folder, values, atts)
            async with self.db.transaction() as s:
                await repo.save_folder_state(s, **state)
        await self._report(len(batch.uids))

    async def _store_alone(
        self, folder: Folder, values: dict[str, Any], atts: list[dict[str, Any]]
    ) -> None:
        try:
            async with self.db.transaction() as s:
                counts = await self._write(s, [(values, atts)])
            self._count(*counts)
        except DBAPIError as exc:
            if database_gone(exc):
                raise
            row, problem = unstorable(values, exc)
            record(problem, account=self.account, folder=folder, uid=values["imap_uid"])
            async with self.db.transaction() as s:
                counts = await self._write(s, [(row, [])])
            self._count(*counts)

    def _count(self, new: int, updated: int) -> None:
        """Counted once committed: a batch stored again one by one is not counted twice."""
        self.result.new += new
        self.result.updated += updated

    async def _write(
        self, s: AsyncSession, built: list[tuple[dict[str, Any], list[dict[str, Any]]]]
    ) -> tuple[int, int]:
        """Upsert the rows and replace their attachments: (new, refreshed)."""
        tenant_id = self.account.tenant_id
        before = (
            await payloads_by_provider_id(
                s, tenant_id, self.account.id, [v["provider_id"] for v, _ in built]
            )
            if self.refetch
            else None
        )
        saved = await repo.upsert_messages(s, [v for v, _ in built])
        new_atts: list[dict[str, Any]] = []
        refreshed: list[uuid.UUID] = []
        reports: list[tuple[uuid.UUID, dict[str, Any]]] = []
        for values, atts in built:
            hit = saved.get(values["provider_id"])
            if hit is None:  # a row marked deleted stays deleted
                continue
            real_id, inserted = hit
            if not inserted:
                refreshed.append(real_id)
            elif wants_recording(values):
                reports.append((real_id, values))
            new_atts.extend({**a, "message_id": real_id} for a in atts)
        await messages_repo.replace_attachments(
            s, tenant_id=tenant_id, message_ids=refreshed, rows=new_atts
        )
        await emit_stored(s, tenant_id=tenant_id, stored=list(saved.values()), before=before)
        await record_stored(s, tenant_id=self.account.tenant_id, stored=reports)
        return len(saved) - len(refreshed), len(refreshed)


async def sync_folder(syncer: _Syncer, folder: Folder, box: MailboxInfo, *, full: bool) -> None:
    """Bring one folder up to date (the caller has decided it may have changed)."""
    client, account = syncer.client, syncer.account
    info = await client.select(box.name)
    if info.uidnext is None:
        info.uidnext = ((await client.uid_search("ALL")).max or 0) + 1
    if folder.uidvalidity is not None and folder.uidvalidity != info.uidvalidity:
        await resync_new_generation(syncer, folder, info)
    elif folder.uidvalidity is None or full:
        syncer.may_cut = True
        try:
            uids = await syncer.fetch_uids(folder, info, ["1:*"] if info.exists else [])
        finally:
            syncer.may_cut = False
        if folder.uidvalidity is not None:
            await expunged_by_search(syncer, folder, info, server_uids=uids)
    else:
        known_next = folder.uidnext or 1
        if info.uidnext > known_next:
            syncer.may_cut = True
            try:
                await syncer.fetch_uids(folder, info, [f"{known_next}:*"], floor=known_next)
            finally:
                syncer.may_cut = False
        # A part cut mid-folder committed UIDNEXT but not HIGHESTMODSEQ: this pass (all flags
        # below UIDNEXT when the folder has no HIGHESTMODSEQ yet) makes the folder whole.
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
    budget: Budget | None = None,
    resume: dict[str, Any] | None = None,
) -> SyncResult:
    """Sync every selectable folder (or the one named) of a connected client's account.

    With `resume` (a cut part's `SyncResult.resume()`), folders finished by earlier parts are
    skipped and the one a part stopped in goes on from its stored UIDNEXT (never from 1:*).
    """
    done = list((resume or {}).get("done") or [])
    partial = (resume or {}).get("partial")
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
        (row, box)
        for row, box in zip(rows, boxes, strict=True)
        if row.name not in done and (full or row.name == partial or not _unchanged(row, box))
    ]
    syncer = _Syncer(
        db, client, account, progress, total=sum(_expected(r, b) for r, b in work), budget=budget
    )
    syncer.refetch = full
    result = syncer.result
    result.done = done
    for row, box in work:
        if syncer.spent():  # between folders: the next part starts with this one
            result.cut, result.partial = True, None
            break
        try:
            await sync_folder(syncer, row, box, full=full and row.name != partial)
        except BudgetSpent:
            result.cut, result.partial = True, row.name
            break
        done.append(row.name)
    result.folders = len(boxes)
    return result


async def run_sync(
    db: Database,
    settings: Settings,
    *,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    folder: str | None = None,
    full: bool = False,
    progress: Progress | None = None,
    budget: Budget | None = None,
    resume: dict[str, Any] | None = None,
) -> SyncResult:
    """Load the tenant's account, connect with its credentials, sync, stamp last_sync_at.

    The connection is one of the account's IMAP slots (services.imap.slots), shared by every
    worker; a part cut by `budget` does not stamp last_sync_at (the sync is not over).
    """
    async with db.transaction() as s:
        account = await account_for_tenant(s, tenant_id=tenant_id, account_id=account_id)
        config = await imap_config(s, settings, account)
        config.max_message_bytes = settings.max_message_bytes
        known = await repo.folders_of(s, tenant_id=tenant_id, account_id=account_id)
    async with imap_slot(settings, account.id), ImapClient(config) as client:
        result = await sync_account(
            db,
            account=account,
            client=client,
            folder=folder,
            full=full,
            progress=progress,
            known_folders=known,
            budget=budget,
            resume=resume,
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
