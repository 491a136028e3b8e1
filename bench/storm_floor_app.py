"""The floor of `make bench BENCH=storm`: postroom's Celery app and broker settings (lanes,
prefetch, acks_late) with one bare task that stores a notification's message by hand.

One asyncpg INSERT of the message row per task, on a connection per worker process: no event
claim, no ORM, no folders, threads or chains. What postroom's drain is compared against.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import asyncpg

from worker.app import celery_app

INSERT = """
INSERT INTO message (id, tenant_id, account_id, provider_id, subject, from_email, html, text,
    snippet, date, sort_at, unread, starred, has_attachments, "references", to_addrs, cc_addrs,
    bcc_addrs, reply_to, headers, flags, labels, parse_warnings)
VALUES ($1, $2, $3, $4, $5, $6, $7, $7, NULL, now(), now(), true, false, false, '[]',
    '[]', '[]', '[]', '[]', '[]', '[]', '["INBOX"]', '[]')
"""
_loop: asyncio.AbstractEventLoop | None = None
_conn: asyncpg.Connection | None = None


async def _store(tenant: str, account: str, obj: dict[str, Any]) -> None:
    global _conn
    if _conn is None:
        dsn = os.environ["POSTROOM_DATABASE_URL"].replace("postgresql+asyncpg", "postgresql")
        _conn = await asyncpg.connect(dsn)
    sender = (obj.get("from") or [{}])[0].get("email")
    await _conn.execute(
        INSERT,
        uuid.uuid4(),
        uuid.UUID(tenant),
        uuid.UUID(account),
        obj["id"],
        obj.get("subject"),
        sender,
        obj.get("body"),
    )


@celery_app.task(name="bench.storm.floor_store", acks_late=True)
def floor_store(tenant: str, account: str, obj: dict[str, Any]) -> None:
    global _loop
    if _loop is None:
        _loop = asyncio.new_event_loop()
    _loop.run_until_complete(_store(tenant, account, obj))


app: Any = celery_app
