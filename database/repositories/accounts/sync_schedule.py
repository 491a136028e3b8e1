"""Which accounts are due for a periodic sync: interval elapsed and no sync still unfinished."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Account, AccountStatus, Event
from database.repositories.events.rows import UNFINISHED
from database.task_names import TaskName

_acc = Account.__table__  # type: ignore[attr-defined]
_ev = Event.__table__  # type: ignore[attr-defined]


async def lock_due_accounts(session: AsyncSession, *, limit: int) -> list[Account]:
    """Lock the due accounts (SKIP LOCKED: a second scheduler running at once takes others)."""
    interval = sa.func.make_interval(0, 0, 0, 0, 0, 0, _acc.c.sync_interval_s)
    busy = sa.exists().where(
        _ev.c.account_id == _acc.c.id,
        _ev.c.task_name == TaskName.sync_account,
        _ev.c.status.in_(UNFINISHED),
    )
    stmt = (
        sa.select(_acc)
        .where(
            _acc.c.status == AccountStatus.active,
            _acc.c.deleted_at.is_(None),
            _acc.c.sync_interval_s > 0,
            sa.or_(_acc.c.last_sync_at.is_(None), _acc.c.last_sync_at + interval <= sa.func.now()),
            ~busy,
        )
        .order_by(_acc.c.last_sync_at.asc().nulls_first())
        .limit(limit)
        .with_for_update(skip_locked=True, of=_acc)
    )
    rows = (await session.execute(stmt)).mappings().all()
    return [Account(**r) for r in rows]
