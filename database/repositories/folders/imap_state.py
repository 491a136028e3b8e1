"""IMAP sync state: folders with their UIDVALIDITY/UIDNEXT/HIGHESTMODSEQ and batch writes of
messages keyed by (account, provider id). Every statement filters on the tenant."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Folder, Message
from database.repositories.messages import rows as messages
from database.repositories.messages import threads

_m = Message.__table__  # type: ignore[attr-defined]
_f = Folder.__table__  # type: ignore[attr-defined]

# What a re-fetch of a known message may change; classification and deletion stay.
_REFRESH = (
    "folder_id",
    "imap_uid",
    "uidvalidity",
    "modseq",
    "flags",
    "unread",
    "starred",
    "labels",
    "message_id_header",
    "in_reply_to",
    "references",
    "from_name",
    "from_email",
    "to_addrs",
    "cc_addrs",
    "bcc_addrs",
    "reply_to",
    "subject",
    "date",
    "sort_at",
    "snippet",
    "text",
    "html",
    "headers",
    "size",
    "has_attachments",
    "parse_warnings",
    "too_large",
    "problem",
)
# VANISHED and expunge ranges per UPDATE: two array parameters whatever the count.
_RANGES_PER_STATEMENT = 50_000


async def upsert_folder(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    name: str,
    provider_id: str,
    role: str | None,
    delimiter: str | None,
) -> Folder:
    """Create or refresh a folder row (role and delimiter follow the server); return it."""
    ins = insert(_f).values(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        account_id=account_id,
        name=name,
        provider_id=provider_id,
        role=role,
        delimiter=delimiter,
    )
    stmt = ins.on_conflict_do_update(
        index_elements=["account_id", "name"],
        set_={
            "role": ins.excluded.role,
            "delimiter": ins.excluded.delimiter,
            "provider_id": ins.excluded.provider_id,
        },
    ).returning(*_f.c)
    row = (await session.execute(stmt)).mappings().one()
    return Folder(**row)


async def folders_of(
    session: AsyncSession, *, tenant_id: uuid.UUID, account_id: uuid.UUID
) -> list[Folder]:
    stmt = sa.select(Folder).where(_f.c.tenant_id == tenant_id, _f.c.account_id == account_id)
    return list((await session.execute(stmt)).scalars())


async def save_folder_state(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    folder_id: uuid.UUID,
    uidvalidity: int | None,
    uidnext: int | None,
    highest_modseq: int | None,
) -> None:
    await session.execute(
        sa.update(_f)
        .where(_f.c.id == folder_id, _f.c.tenant_id == tenant_id)
        .values(
            uidvalidity=uidvalidity,
            uidnext=uidnext,
            highest_modseq=highest_modseq,
            last_synced_at=sa.func.now(),
        )
    )


async def upsert_messages(
    session: AsyncSession, rows: Sequence[dict[str, Any]]
) -> dict[str, tuple[uuid.UUID, bool]]:
    """Sync rows (IMAP, POP3) into their threads, then through the one message upsert; a
    known message gets only what a re-fetch may change (_REFRESH): provider_id -> (id, inserted).
    """
    if not rows:
        return {}
    await threads.assign_by_headers(session, rows)
    return await messages.upsert_many(session, rows, refresh=_REFRESH)


async def apply_flags(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    folder_id: uuid.UUID,
    uidvalidity: int,
    changes: Sequence[dict[str, Any]],
) -> list[uuid.UUID]:
    """Set flags of known UIDs: changes = [{uid, flags, unread, starred, modseq}]; the ids of
    the rows that changed."""
    if not changes:
        return []
    data = sa.values(
        sa.column("uid", sa.BigInteger),
        sa.column("flags", _m.c.flags.type),
        sa.column("unread", sa.Boolean),
        sa.column("starred", sa.Boolean),
        sa.column("modseq", sa.BigInteger),
        name="changes",
    ).data([(c["uid"], c["flags"], c["unread"], c["starred"], c["modseq"]) for c in changes])
    stmt = (
        sa.update(_m)
        .where(
            _m.c.tenant_id == tenant_id,
            _m.c.folder_id == folder_id,
            _m.c.uidvalidity == uidvalidity,
            _m.c.imap_uid == data.c.uid,
            _m.c.deleted_at.is_(None),
            sa.or_(
                _m.c.flags != data.c.flags,
                _m.c.unread != data.c.unread,
                _m.c.starred != data.c.starred,
            ),
        )
        .values(
            flags=data.c.flags,
            unread=data.c.unread,
            starred=data.c.starred,
            # A NULL in VALUES is untyped text to PostgreSQL: cast it back.
            modseq=sa.func.coalesce(sa.cast(data.c.modseq, sa.BigInteger), _m.c.modseq),
            updated_at=sa.func.now(),
        )
        .returning(_m.c.id)
    )
    return list((await session.execute(stmt)).scalars())


async def mark_uids_deleted(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    folder_id: uuid.UUID,
    uidvalidity: int,
    ranges: Sequence[tuple[int, int]],
) -> list[uuid.UUID]:
    """Mark deleted the stored rows whose UID falls in one of the (lo, hi) ranges: their ids.

    The ranges are joined to the rows in PostgreSQL (an index range scan per range on
    ix_message_folder_uid), so `1:4294967295` costs the rows it hits, never 4 billion UIDs.
    """
    gone: list[uuid.UUID] = []
    for i in range(0, len(ranges), _RANGES_PER_STATEMENT):
        part = ranges[i : i + _RANGES_PER_STATEMENT]
        r = (
            sa.func.unnest(
                sa.cast([lo for lo, _ in part], postgresql.ARRAY(sa.BigInteger)),
                sa.cast([hi for _, hi in part], postgresql.ARRAY(sa.BigInteger)),
            )
            .table_valued("lo", "hi")
            .render_derived(name="r")
        )
        stmt = (
            sa.update(_m)
            .where(
                _m.c.tenant_id == tenant_id,
                _m.c.folder_id == folder_id,
                _m.c.uidvalidity == uidvalidity,
                _m.c.imap_uid.between(r.c.lo, r.c.hi),
                _m.c.deleted_at.is_(None),
            )
            .values(deleted_at=sa.func.now(), updated_at=sa.func.now())
            .returning(_m.c.id)
        )
        gone.extend((await session.execute(stmt)).scalars())
    return gone


async def live_uids(
    session: AsyncSession, *, tenant_id: uuid.UUID, folder_id: uuid.UUID, uidvalidity: int
) -> list[int]:
    stmt = sa.select(_m.c.imap_uid).where(
        _m.c.tenant_id == tenant_id,
        _m.c.folder_id == folder_id,
        _m.c.uidvalidity == uidvalidity,
        _m.c.deleted_at.is_(None),
    )
    return [int(u) for u in (await session.execute(stmt)).scalars() if u is not None]


async def live_message_ids(
    session: AsyncSession, *, tenant_id: uuid.UUID, folder_id: uuid.UUID, stale_uidvalidity: int
) -> dict[str, uuid.UUID]:
    """Message-ID -> row id of live rows stored under an old UIDVALIDITY of the folder."""
    stmt = sa.select(_m.c.message_id_header, _m.c.id).where(
        _m.c.tenant_id == tenant_id,
        _m.c.folder_id == folder_id,
        _m.c.uidvalidity != stale_uidvalidity,
        _m.c.deleted_at.is_(None),
        _m.c.message_id_header.is_not(None),
    )
    return {r.message_id_header: r.id for r in await session.execute(stmt)}


async def rekey(
    session: AsyncSession, *, tenant_id: uuid.UUID, rows: Sequence[dict[str, Any]]
) -> None:
    """Move rows to their new UIDs after a UIDVALIDITY change: [{id, provider_id, uid, ...}]."""
    for r in rows:
        await session.execute(
            sa.update(_m)
            .where(_m.c.id == r["id"], _m.c.tenant_id == tenant_id)
            .values(
                provider_id=r["provider_id"],
                imap_uid=r["uid"],
                uidvalidity=r["uidvalidity"],
                flags=r["flags"],
                unread=r["unread"],
                starred=r["starred"],
                modseq=r["modseq"],
                updated_at=sa.func.now(),
            )
        )


async def delete_stale_generation(
    session: AsyncSession, *, tenant_id: uuid.UUID, folder_id: uuid.UUID, uidvalidity: int
) -> list[uuid.UUID]:
    """Mark deleted the live rows of a folder still keyed by an older UIDVALIDITY: their ids."""
    stmt = (
        sa.update(_m)
        .where(
            _m.c.tenant_id == tenant_id,
            _m.c.folder_id == folder_id,
            _m.c.uidvalidity != uidvalidity,
            _m.c.deleted_at.is_(None),
        )
        .values(deleted_at=sa.func.now(), updated_at=sa.func.now())
        .returning(_m.c.id)
    )
    return list((await session.execute(stmt)).scalars())


async def mark_synced(
    session: AsyncSession, *, tenant_id: uuid.UUID, account_id: uuid.UUID
) -> None:
    from database.models import Account

    await session.execute(
        sa.update(Account)
        .where(Account.id == account_id, Account.tenant_id == tenant_id)  # type: ignore[arg-type]
        .values(last_sync_at=sa.func.now(), updated_at=sa.func.now())
    )
