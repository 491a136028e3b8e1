"""The drain floor: a bare Celery task storing one Nylas message with one asyncpg INSERT.

No event row, no claim, no classifier, no rules, no ORM: parse the notification and INSERT the
message row ... ON CONFLICT DO NOTHING on a connection each prefork child keeps open. What
postroom's webhook -> stored, classified, rules-applied drain is compared against.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from celery import Celery
from celery.signals import worker_process_init

DSN = os.environ["POSTROOM_DATABASE_URL"].replace("postgresql+asyncpg", "postgresql")
app = Celery("drain_floor", broker=os.environ["POSTROOM_REDIS_URL"])
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=4,
    task_acks_late=True,
    worker_hijack_root_logger=False,
)
INSERT = (
    "INSERT INTO message (id, tenant_id, account_id, provider_id, subject, from_email,"
    " to_addrs, cc_addrs, bcc_addrs, reply_to, html, text, labels, sort_at, unread, starred,"
    ' has_attachments, "references", headers, flags, parse_warnings, created_at, updated_at)'
    " VALUES ($1, $2, $3, $4, $5, $6, $7, '[]', '[]', '[]', $8, $9, $10, $11, $12, false, false,"
    " '[]', '{}', '[]', '[]', now(), now())"
    " ON CONFLICT (account_id, provider_id) DO NOTHING"
)
state: dict[str, Any] = {}


@worker_process_init.connect
def _connect(**_: Any) -> None:
    loop = asyncio.new_event_loop()
    state["loop"] = loop
    state["conn"] = loop.run_until_complete(asyncpg.connect(DSN))


async def _store(body: str, tenant_id: str, account_id: str) -> None:
    note = orjson.loads(body)
    obj = note["data"]["object"]
    sender = (obj.get("from") or [{}])[0]
    await state["conn"].execute(
        INSERT,
        uuid.uuid4(),
        uuid.UUID(tenant_id),
        uuid.UUID(account_id),
        obj["id"],
        obj.get("subject"),
        sender.get("email"),
        orjson.dumps(obj.get("to") or []).decode(),
        obj.get("body"),
        obj.get("body"),
        orjson.dumps(obj.get("folders") or []).decode(),
        datetime.fromtimestamp(obj.get("date") or 0, UTC),
        bool(obj.get("unread")),
    )


@app.task(name="floor.store")
def store(body: str, tenant_id: str, account_id: str) -> None:
    state["loop"].run_until_complete(_store(body, tenant_id, account_id))
