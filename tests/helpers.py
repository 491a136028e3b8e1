"""Helpers the tests import: the session's settings (secrets, environment) and small functions
for waiting on a condition and posting signed webhooks. Fixtures live in conftest.py; this
module has no side effects on import, apart from choosing the session's random secrets."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

PG_ADMIN = os.environ.get("POSTROOM_TEST_PG", "postgres@127.0.0.1:5432")
DB_NAME = f"postroom_test_{os.getpid()}_{secrets.token_hex(3)}"
WEBHOOK_SECRET = "whsec_" + secrets.token_hex(16)
NYLAS_API_KEY = "nyk_" + secrets.token_hex(12)

# The session's environment (database, Redis, fake Nylas, secrets): filled by tests/conftest.py
# once its peers are up, before any test module is imported, and passed to subprocesses.
ENV: dict[str, str] = {}


async def wait_for(
    check: Callable[[], Awaitable[T]],
    *,
    timeout: float = 20.0,
    interval: float = 0.1,
    message: str = "condition",
) -> T:
    """Await `check()` until it returns something truthy; fail with `message` after timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}; last={last!r}")


def wait_until(
    check: Callable[[], T],
    *,
    timeout: float = 20.0,
    interval: float = 0.1,
    message: str = "condition",
) -> T:
    """`wait_for` for synchronous checks (a subprocess's log, a Redis key)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}; last={last!r}")


async def tenantless_events(db: Any, since: Any) -> list[Any]:
    """Events without a tenant received since `since` (the `started_at` fixture), oldest first:
    what this test's webhooks stored, told apart from other tests' by time."""
    import sqlalchemy as sa

    from database.models import Event

    query = sa.select(Event).where(Event.tenant_id.is_(None), Event.received_at >= since)
    async with db.sessionmaker() as s:
        return list((await s.execute(query.order_by(Event.received_at))).scalars())


def notification(
    type_: str,
    obj: dict[str, Any] | None = None,
    *,
    grant_id: str | None = None,
    nid: str | None = None,
    time_: int | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {"application_id": "app-1", "object": obj or {}}
    if grant_id is not None:
        data["grant_id"] = grant_id
    return {
        "specversion": "1.0",
        "type": type_,
        "source": "/google/emails/realtime",
        "id": nid or uuid.uuid4().hex,
        "time": time_ if time_ is not None else int(time.time()),
        "webhook_delivery_attempt": 1,
        "data": data,
    }


def sign(body: bytes, secret: str = WEBHOOK_SECRET) -> str:
    from services.events.webhooks import sign as _sign

    return _sign(secret, body)


async def post_webhook(
    client: httpx.AsyncClient,
    payload: dict[str, Any] | bytes,
    *,
    signature: str | None = "auto",
    gzip_body: bool = False,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    hdrs = {"content-type": "application/json", **(headers or {})}
    if gzip_body:
        body = gzip.compress(body)
        hdrs["content-encoding"] = "gzip"
    if signature == "auto":
        hdrs["x-nylas-signature"] = sign(body)
    elif signature is not None:
        hdrs["x-nylas-signature"] = signature
    return await client.post("/webhooks/nylas", content=body, headers=hdrs)


def short_consumers(celery_app: Any, *, on: bool) -> None:
    """Stop (or resume) consuming every short lane, so notifications wait in the queue."""
    from worker.config import Queue, lane_names

    names = [n for r in celery_app.control.ping(timeout=2) for n in r if "-short-" in n]
    assert names, "the short worker did not answer a ping"
    control = celery_app.control.add_consumer if on else celery_app.control.cancel_consumer
    for lane in lane_names(Queue.short):
        # One reply expected per short worker: wait for those, not for a timeout.
        assert control(lane, destination=names, reply=True, timeout=5, limit=len(names))
