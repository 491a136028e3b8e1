"""Fixtures' helpers for outbound-event tests: a delivery process in the test's loop, endpoints
made through the API, events emitted as an effect would."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from database.engine import Database
from services.tenant_events.deliverer import Deliverer
from services.tenant_events.emit import TenantEventType, emit_many
from tests.helpers import wait_for
from tests.webhook_receiver import Received, Receiver

# Short waits keep retry tests quick; the policy is the same.
FAST = {
    "webhook_retry_schedule": "0.3,0.3,0.3",
    "webhook_poll_interval_s": 0.05,
}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    try:
        yield r
    finally:
        await r.stop()


StartDeliverer = Callable[..., Awaitable[Deliverer]]


@pytest.fixture
async def start_deliverer(settings: Any) -> AsyncIterator[StartDeliverer]:
    """Start delivery processes (engines of their own) in the test's loop; all stop at the end."""
    running: list[tuple[Deliverer, asyncio.Event, asyncio.Task[None], Database]] = []

    async def start(**overrides: Any) -> Deliverer:
        s = settings.model_copy(update={**FAST, **overrides})
        db = Database.from_settings(s, pool_size=5)
        d = Deliverer(settings=s, db=db)
        stop = asyncio.Event()
        running.append((d, stop, asyncio.create_task(d.run(stop)), db))
        return d

    yield start
    for d, stop, task, db in running:
        stop.set()
        await asyncio.wait({task}, timeout=30)
        await d.aclose()
        await db.dispose()


async def create_endpoint(
    client: httpx.AsyncClient, headers: dict[str, str], url: str, **fields: Any
) -> dict[str, Any]:
    r = await client.post("/v1/webhooks", json={"url": url, **fields}, headers=headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def emit_events(
    db: Database,
    tenant_id: uuid.UUID,
    n: int = 1,
    type: TenantEventType = TenantEventType.message_created,
) -> list[uuid.UUID]:
    async with db.transaction() as s:
        return await emit_many(
            s, tenant_id=tenant_id, events=[(type, {"message": {"id": f"m{i}"}}) for i in range(n)]
        )


def verify(secret: str, req: Received) -> dict[str, Any]:
    """What the receiver's own library makes of a delivery (raises when it does not verify)."""
    return dict(Webhook(secret).verify(req.body, req.headers))


async def until(check: Callable[[], bool], *, timeout: float = 20.0) -> None:
    """Wait until a condition on what the receiver got holds."""

    async def wrapped() -> bool:
        return check()

    await wait_for(wrapped, timeout=timeout, interval=0.05)
