"""Threads: giving messages their thread as they are stored, and listing threads.

A thread's counts, dates, subject and participants are not written here: the database
trigger `message_thread_track` (migration 0009) keeps them from the message rows. This
module only decides which thread a message joins, creates threads, and merges two threads
when a message turns out to link them.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from datetime import datetime
from itertools import groupby
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Account, Message, Thread, ThreadRef
from database.thread_refs import link, message_refs

_t = Thread.__table__  # type: ignore[attr-defined]
_r = ThreadRef.__table__  # type: ignore[attr-defined]
_m = Message.__table__  # type: ignore[attr-defined]
_a = Account.__table__  # type: ignore[attr-defined]


REF_CHUNK = 2000


def _uuids(values: Any) -> Any:
    """One array parameter instead of one parameter per value (IN (...) expands)."""
    return sa.bindparam(None, list(values), type_=ARRAY(sa.Uuid))


def _texts(values: Any) -> Any:
    return sa.bindparam(None, list(values), type_=ARRAY(sa.Text))


def derived_id(kind: str, account_id: uuid.UUID, key: str) -> uuid.UUID:
    """A thread id computed from what identifies the thread, so storing the same message
    twice (a retry, a refresh) finds the same thread without a lookup. Migration 0009 uses
    the same formula (md5 of the text) for the messages it threads."""
    return uuid.UUID(hashlib.md5(f"{kind}:{account_id}:{key}".encode()).hexdigest())  # noqa: S324


async def _create(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Empty thread rows (the trigger fills them as their messages are stored)."""
    if rows:
        # Rows as executemany parameters: one cached statement whatever their number.
        stmt = (
            insert(_t)
            .values(message_count=0, unread_count=0, participants=[])
            .on_conflict_do_nothing(index_elements=["id"])
        )
        await session.execute(stmt, [dict(r) for r in rows])


async def provider_thread(session: AsyncSession, values: dict[str, Any]) -> str:
    """The thread of a message whose provider names its thread (Nylas `thread_id`), or a
    thread of its own when it names none; the thread row exists once this returns."""
    account_id = values["account_id"]
    provider_id = values.get("thread_id")
    if provider_id:
        thread_id = derived_id("nylas", account_id, str(provider_id))
    else:
        thread_id = derived_id("msg", account_id, str(values["provider_id"]))
    await _create(
        session, [{"id": thread_id, "tenant_id": values["tenant_id"], "account_id": account_id}]
    )
    return str(thread_id)


async def provider_threads(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> list[str]:
    """provider_thread for many messages (their column values), with one INSERT."""
    ids = []
    for values in rows:
        account_id = values["account_id"]
        if values.get("thread_id"):
            ids.append(derived_id("nylas", account_id, str(values["thread_id"])))
        else:
            ids.append(derived_id("msg", account_id, str(values["provider_id"])))
    new = {
        tid: {"id": tid, "tenant_id": v["tenant_id"], "account_id": v["account_id"]}
        for tid, v in zip(ids, rows, strict=True)
    }
    await _create(session, sorted(new.values(), key=lambda r: r["id"]))
    return [str(t) for t in ids]


async def _lock_account(session: AsyncSession, account_id: uuid.UUID) -> None:
    """Two transactions threading mail of one account must not both create a thread for the
    same conversation: they take turns (the lock ends with the transaction)."""
    key = sa.func.hashtextextended(f"postroom.thread:{account_id}", 0)
    await session.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))


async def _merge_linked(
    session: AsyncSession, account_id: uuid.UUID, found: list[set[uuid.UUID]]
) -> dict[uuid.UUID, uuid.UUID]:
    """Merge the stored threads that new messages link (directly, or through a chain of
    messages of this batch); old id -> surviving id of every merged thread."""
    survivor: dict[uuid.UUID, uuid.UUID] = {}
    for _, ids in link([[str(t) for t in threads] for threads in found]):
        if len(ids) > 1:
            survivor.update(await _merge(session, account_id, {uuid.UUID(t) for t in ids}))
    return survivor


async def _merge(
    session: AsyncSession, account_id: uuid.UUID, threads: set[uuid.UUID]
) -> dict[uuid.UUID, uuid.UUID]:
    """Fold these threads into the oldest one; old id -> surviving id for each of them."""
    rows = (
        await session.execute(
            sa.select(_t.c.id)
            .where(_t.c.id == sa.any_(_uuids(threads)))
            .order_by(_t.c.created_at, _t.c.id)
        )
    ).all()
    ordered = [r.id for r in rows] or sorted(threads)
    survivor, losers = ordered[0], [t for t in threads if t != ordered[0]]
    if losers:
        loser_text = [str(t) for t in losers]
        # The trigger moves each message's counts from the old thread to the survivor.
        await session.execute(
            sa.update(_m)
            .where(_m.c.account_id == account_id, _m.c.thread_id == sa.any_(_texts(loser_text)))
            .values(thread_id=str(survivor))
        )
        await session.execute(
            sa.update(_r)
            .where(_r.c.thread_id == sa.any_(_uuids(losers)))
            .values(thread_id=survivor)
        )
        await session.execute(sa.delete(_t).where(_t.c.id == sa.any_(_uuids(losers))))
    return dict.fromkeys(threads, survivor)


async def assign_by_headers(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Set `thread_id` on each row about to be stored (IMAP, POP3: no provider threads),
    from its Message-ID, In-Reply-To and References, in the caller's transaction.

    Rows linked to each other join one thread even within the batch; rows linked to stored
    threads join them; a row linking several stored threads merges them into the oldest.
    """
    key = lambda r: str(r["account_id"])  # noqa: E731
    for _, group_iter in groupby(sorted(rows, key=key), key=key):
        group = list(group_iter)
        await _assign_account(session, group[0]["account_id"], group[0]["tenant_id"], group)


async def _assign_account(
    session: AsyncSession,
    account_id: uuid.UUID,
    tenant_id: uuid.UUID,
    rows: list[dict[str, Any]],
) -> None:
    await _lock_account(session, account_id)
    refs = [message_refs(r) for r in rows]
    groups = link(refs)
    all_refs = sorted({ref for ids in refs for ref in ids})
    known: dict[str, uuid.UUID] = {}
    if all_refs:
        found = await session.execute(
            sa.select(_r.c.ref, _r.c.thread_id).where(
                _r.c.account_id == account_id, _r.c.ref == sa.any_(_texts(all_refs))
            )
        )
        known = {r.ref: r.thread_id for r in found}
    survivor = await _merge_linked(
        session, account_id, [{known[i] for i in ids if i in known} for _, ids in groups]
    )
    new_threads: list[dict[str, Any]] = []
    new_refs: dict[str, uuid.UUID] = {}
    for members, ids in groups:
        existing = {survivor.get(known[i], known[i]) for i in ids if i in known}
        if existing:
            thread_id = next(iter(existing))
        elif ids:
            thread_id = uuid.uuid4()
        else:  # no id at all: a thread of its own, the same one if stored again
            thread_id = derived_id("msg", account_id, str(rows[members[0]]["provider_id"]))
        if not existing:
            new_threads.append({"id": thread_id, "tenant_id": tenant_id, "account_id": account_id})
        for i in members:
            rows[i]["thread_id"] = str(thread_id)
        for ref in ids:
            if ref not in known:
                new_refs[ref] = thread_id
    await _create(session, new_threads)
    refs_rows = [
        {"account_id": account_id, "ref": ref, "tenant_id": tenant_id, "thread_id": t}
        for ref, t in sorted(new_refs.items())
    ]
    # A batch of long References can name many thousands of ids: chunks stay far below the
    # driver's 32,767 parameters per statement.
    for i in range(0, len(refs_rows), REF_CHUNK):
        await session.execute(
            insert(_r)
            .values(refs_rows[i : i + REF_CHUNK])
            .on_conflict_do_nothing(index_elements=["account_id", "ref"])
        )


LIST_COLUMNS = (
    _t.c.id,
    _t.c.account_id,
    _t.c.subject,
    _t.c.message_count,
    _t.c.unread_count,
    _t.c.participants,
    _t.c.last_message_at,
)


def list_query(
    *,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> sa.Select[Any]:
    """Newest first on (last_message_at, id): ix_thread_account_last / ix_thread_tenant_last
    serve it without sorting (their predicate, message_count > 0, is repeated here)."""
    stmt = sa.select(*LIST_COLUMNS).where(_t.c.tenant_id == tenant_id, _t.c.message_count > 0)
    if account_id is not None:
        stmt = stmt.where(_t.c.account_id == account_id)
    else:
        live = sa.select(_a.c.id).where(_a.c.tenant_id == tenant_id, _a.c.deleted_at.is_(None))
        stmt = stmt.where(_t.c.account_id.in_(live))
    if after is not None:
        stmt = stmt.where(sa.tuple_(_t.c.last_message_at, _t.c.id) < sa.tuple_(*after))
    return stmt.order_by(_t.c.last_message_at.desc(), _t.c.id.desc()).limit(limit)


async def list_page(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[sa.RowMapping]:
    stmt = list_query(tenant_id=tenant_id, account_id=account_id, after=after, limit=limit)
    return list((await session.execute(stmt)).mappings())
