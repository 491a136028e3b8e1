"""postroom.maintenance.reconcile through the real Celery worker and the fake Nylas API."""

from __future__ import annotations

import time
from typing import Any

import pytest
import sqlalchemy as sa

from database.models import Account, Message
from tests.factories import create_nylas_account
from tests.fakes.nylas_server import make_message
from tests.helpers import wait_for

pytestmark = pytest.mark.usefixtures("worker")


async def test_beat_reconcile_backfills_messages_no_webhook_announced(
    empty_database: None, db: Any, settings: Any, fake_nylas: Any
) -> None:
    # Reconcile walks every tenant's Nylas accounts: this test's must be the only one.
    from worker.app import make_celery
    from worker.config import ROUTES, lane_names

    account = await create_nylas_account(db)
    now = int(time.time())
    for i in range(3):
        fake_nylas.put_message(
            account.grant_id,
            make_message(
                account.grant_id, f"missed-{i}", subject=f"Never announced {i}", date=now - i
            ),
        )

    route = ROUTES["postroom.maintenance.reconcile"]
    make_celery(settings, publisher_only=True).send_task(
        route.name, queue=lane_names(route.queue)[0], priority=route.priority
    )

    async def stored() -> list[Message]:
        async with db.sessionmaker() as s:
            stmt = sa.select(Message).where(Message.account_id == account.id)
            rows = list((await s.execute(stmt)).scalars())
        return rows if len(rows) == 3 else []

    rows = await wait_for(stored, timeout=30, message="three backfilled messages")
    assert sorted(r.subject for r in rows) == [f"Never announced {i}" for i in range(3)]
    async with db.sessionmaker() as s:
        refreshed = await s.get(Account, account.id)
    assert refreshed.sync_cursor is not None and refreshed.last_sync_at is not None
    assert fake_nylas.requests_to(rf"/grants/{account.grant_id}/messages$")
