"""The incremental parts of an IMAP folder sync: flag changes, expunges, a new UIDVALIDITY."""

from __future__ import annotations

from typing import Any, Protocol

from database.engine import Database
from database.models import Account, Folder
from database.repositories.folders import imap_state as repo
from services.imap.client import ImapClient, SelectInfo
from services.imap.protocol import UidSet, number, uid_set
from services.messages.mime import message_id_of_header_block
from services.tenant_events.emit import TenantEventType, emit_messages


class Counts(Protocol):
    updated: int
    deleted: int


class FolderSync(Protocol):
    """What these steps use of the sync running them (services.imap.sync's syncer).

    A Protocol rather than the syncer's class, so this module does not import imap_sync,
    which imports it: the two stay separable (scripts/check_imports.py forbids the cycle).
    """

    db: Database
    client: ImapClient
    account: Account

    @property
    def result(self) -> Counts: ...

    def provider_id(self, folder: Folder, uidvalidity: int, uid: int) -> str: ...

    async def fetch_uids(
        self, folder: Folder, info: SelectInfo, specs: list[str], *, floor: int = 1
    ) -> UidSet: ...


FLAG_BATCH = 1000
# UIDs per UID FETCH command when they are listed one by one (a command line stays short).
LISTED_UIDS = 2000


def flag_values(flags: Any) -> dict[str, Any]:
    names = sorted(str(f) for f in flags or [] if str(f).lower() != "\\recent")
    lower = {f.lower() for f in names}
    return {"flags": names, "unread": "\\seen" not in lower, "starred": "\\flagged" in lower}


def modseq_of(attrs: dict[str, Any]) -> int | None:
    """MODSEQ (n) of a FETCH answer; None when absent or not a 63-bit number (RFC 7162)."""
    value = attrs.get("MODSEQ")
    try:
        return number(value[0]) if isinstance(value, list) and value else None
    except ValueError:
        return None


async def _apply_flags(
    syncer: FolderSync, folder: Folder, info: SelectInfo, changes: list[dict[str, Any]]
) -> None:
    if not changes:
        return
    tenant_id = syncer.account.tenant_id
    async with syncer.db.transaction() as s:
        changed = await repo.apply_flags(
            s,
            tenant_id=tenant_id,
            folder_id=folder.id,
            uidvalidity=info.uidvalidity,
            changes=changes,
        )
        await emit_messages(
            s, tenant_id=tenant_id, type=TenantEventType.message_updated, message_ids=changed
        )
    syncer.result.updated += len(changed)


async def _mark_deleted(syncer: FolderSync, folder: Folder, info: SelectInfo, uids: UidSet) -> None:
    if not uids:
        return
    tenant_id = syncer.account.tenant_id
    async with syncer.db.transaction() as s:
        gone = await repo.mark_uids_deleted(
            s,
            tenant_id=tenant_id,
            folder_id=folder.id,
            uidvalidity=info.uidvalidity,
            ranges=uids.ranges(),
        )
        await emit_messages(
            s, tenant_id=tenant_id, type=TenantEventType.message_deleted, message_ids=gone
        )
    syncer.result.deleted += len(gone)


async def expunged_by_search(
    syncer: FolderSync,
    folder: Folder,
    info: SelectInfo,
    *,
    server_uids: UidSet | None = None,
    below: int | None = None,
) -> None:
    """Without QRESYNC: stored UIDs the server no longer lists were expunged.

    The walk is over the rows we hold; the server's set is only asked for membership.
    """
    present = server_uids if server_uids is not None else await syncer.client.uid_search("ALL")
    async with syncer.db.transaction() as s:
        known = await repo.live_uids(
            s, tenant_id=syncer.account.tenant_id, folder_id=folder.id, uidvalidity=info.uidvalidity
        )
    gone = UidSet.of(u for u in known if u not in present and (below is None or u < below))
    await _mark_deleted(syncer, folder, info, gone)


async def changes_since(
    syncer: FolderSync, folder: Folder, info: SelectInfo, *, known_next: int, uids: UidSet | None
) -> None:
    """Flag changes and expunges among the UIDs stored before this sync."""
    client = syncer.client
    if known_next <= 1:
        return
    use_modseq = bool(folder.highest_modseq and info.highest_modseq and client.has("CONDSTORE"))
    if use_modseq and info.highest_modseq == folder.highest_modseq:
        return  # RFC 7162: any flag change or expunge raises HIGHESTMODSEQ
    qresync = use_modseq and client.has("QRESYNC")
    changes: list[dict[str, Any]] = []
    vanished = UidSet()
    stream = client.uid_fetch(
        f"1:{known_next - 1}",
        "UID FLAGS" + (" MODSEQ" if use_modseq else ""),
        changed_since=folder.highest_modseq if use_modseq else None,
        vanished=qresync,
    )
    async for attrs in stream:
        if "VANISHED" in attrs:
            vanished = vanished.union(attrs["VANISHED"])
            continue
        if attrs["UID"] >= known_next or "PROBLEM" in attrs:
            continue  # an unreadable answer says nothing about the flags: keep ours
        changes.append(
            {"uid": attrs["UID"], "modseq": modseq_of(attrs), **flag_values(attrs.get("FLAGS"))}
        )
        if len(changes) >= FLAG_BATCH:
            await _apply_flags(syncer, folder, info, changes)
            changes = []
    await _apply_flags(syncer, folder, info, changes)
    if qresync:
        # Ranges, intersected with our rows in PostgreSQL: `1:4294967295` is one pair.
        await _mark_deleted(syncer, folder, info, vanished.below(known_next))
    else:
        await expunged_by_search(syncer, folder, info, server_uids=uids, below=known_next)


async def resync_new_generation(syncer: FolderSync, folder: Folder, info: SelectInfo) -> None:
    """UIDVALIDITY changed: re-key rows found again by Message-ID, fetch the rest, drop the gone."""
    tenant_id = syncer.account.tenant_id
    async with syncer.db.transaction() as s:
        known = await repo.live_message_ids(
            s, tenant_id=tenant_id, folder_id=folder.id, stale_uidvalidity=info.uidvalidity
        )
    rekeys: list[dict[str, Any]] = []
    unknown: list[int] = []
    items = "UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]" + (
        " MODSEQ" if info.highest_modseq else ""
    )
    async for attrs in syncer.client.uid_fetch("1:*", items):
        if "VANISHED" in attrs:
            continue
        header = next((v for k, v in attrs.items() if k.startswith("BODY[")), b"")
        # Read as services.messages.mime.parse read it when the row was stored, or the keys differ.
        found = message_id_of_header_block(header) if isinstance(header, bytes) else None
        row_id = known.pop(found, None) if found else None
        if row_id is None:
            unknown.append(attrs["UID"])
            continue
        uid = attrs["UID"]
        rekeys.append(
            {
                "id": row_id,
                "uid": uid,
                "uidvalidity": info.uidvalidity,
                "provider_id": syncer.provider_id(folder, info.uidvalidity, uid),
                "modseq": modseq_of(attrs),
                **flag_values(attrs.get("FLAGS")),
            }
        )
    async with syncer.db.transaction() as s:
        await repo.rekey(s, tenant_id=tenant_id, rows=rekeys)
        # A re-keyed message keeps its id; its provider_id (and maybe its flags) changed.
        await emit_messages(
            s,
            tenant_id=tenant_id,
            type=TenantEventType.message_updated,
            message_ids=[r["id"] for r in rekeys],
        )
    syncer.result.updated += len(rekeys)
    specs = [uid_set(unknown[i : i + LISTED_UIDS]) for i in range(0, len(unknown), LISTED_UIDS)]
    await syncer.fetch_uids(folder, info, specs)
    async with syncer.db.transaction() as s:
        gone = await repo.delete_stale_generation(
            s, tenant_id=tenant_id, folder_id=folder.id, uidvalidity=info.uidvalidity
        )
        await emit_messages(
            s, tenant_id=tenant_id, type=TenantEventType.message_deleted, message_ids=gone
        )
    syncer.result.deleted += len(gone)
