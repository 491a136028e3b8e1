"""The ingest floor: a bare Starlette app doing the webhook's work by hand.

Verify the HMAC, parse, one asyncpg INSERT ... ON CONFLICT DO NOTHING, one Redis LPUSH.
No framework features, no ORM, no Celery: what postroom's ingest is compared against.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import uuid
from contextlib import asynccontextmanager

import asyncpg
import orjson
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SECRET = os.environ["POSTROOM_NYLAS_WEBHOOK_SECRET"].encode()
DSN = os.environ["POSTROOM_DATABASE_URL"].replace("postgresql+asyncpg", "postgresql")
REDIS = os.environ["POSTROOM_REDIS_URL"]
INSERT = (
    "INSERT INTO event (id, source, type, external_id, task_name, task_kwargs, payload, status,"
    " attempts, task_ids, history, steps, publish_count) VALUES ($1, 'nylas', $2, $3,"
    " 'postroom.events.process', '{}', $4, 'received', 0, '[]', '[]', '[]', 1)"
    " ON CONFLICT (source, external_id) DO NOTHING RETURNING id"
)
state: dict[str, object] = {}


async def webhook(request: Request) -> Response:
    body = await request.body()
    sig = request.headers.get("x-nylas-signature", "")
    if not hmac.compare_digest(hmac.new(SECRET, body, hashlib.sha256).hexdigest(), sig):
        return Response(status_code=401)
    note = orjson.loads(body)
    pool: asyncpg.Pool = state["pool"]  # type: ignore[assignment]
    event_id = uuid.uuid4()
    row = await pool.fetchval(INSERT, event_id, note["type"], note["id"], body.decode())
    if row is not None:
        await state["redis"].lpush("floor", json.dumps({"event_id": str(event_id)}))  # type: ignore[attr-defined]
    return Response(
        orjson.dumps({"status": "queued" if row else "duplicate", "event_id": str(event_id)}),
        media_type="application/json",
    )


@asynccontextmanager
async def lifespan(app: Starlette):  # type: ignore[no-untyped-def]
    state["pool"] = await asyncpg.create_pool(DSN, min_size=2, max_size=10)
    state["redis"] = aioredis.Redis.from_url(REDIS)
    yield
    await state["pool"].close()  # type: ignore[attr-defined]


app = Starlette(routes=[Route("/webhooks/nylas", webhook, methods=["POST"])], lifespan=lifespan)
