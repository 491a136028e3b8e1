"""Nylas sync bookkeeping on the account row: the cursor, and which accounts reconcile may take."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Account, AccountStatus, Event, Provider
from database.repositories.events.rows import UNFINISHED
from database.task_names import TaskName

_acc = Account.__table__  # type: ignore[attr-defined]
_ev = Event.__table__  # type: ignore[attr-defined]


async def live_nylas_account_ids(session: AsyncSession) -> list[uuid.UUID]:
    """Active, undeleted Nylas accounts with no sync job still unfinished."""
    busy = sa.exists().where(
        _ev.c.account_id == _acc.c.id,
        _ev.c.task_name == TaskName.sync_account,
        _ev.c.status.in_(UNFINISHED),
    )
    stmt = (
        sa.select(_acc.c.id)
        .where(
            _acc.c.provider == Provider.nylas,
            _acc.c.status == AccountStatus.active,
            _acc.c.deleted_at.is_(None),
            _acc.c.grant_id.is_not(None),
            ~busy,
        )
        .order_by(_acc.c.last_sync_at.asc().nulls_first())
    )
    return list((await session.execute(stmt)).scalars())


async def lock_account(session: AsyncSession, account_id: uuid.UUID) -> Account | None:
    """The account row locked for this transaction, or None if another run holds it."""
    stmt = (
        sa.select(Account)
        .where(_acc.c.id == account_id, _acc.c.deleted_at.is_(None))
        .with_for_update(skip_locked=True)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def mark_synced(session: AsyncSession, account_id: uuid.UUID, *, cursor: str) -> None:
    await session.execute(
        sa.update(_acc)
        .where(_acc.c.id == account_id)
        .values(sync_cursor=cursor, last_sync_at=sa.func.now(), updated_at=sa.func.now())
    )
