"""A webhook that PostgreSQL cannot take in time answers 503 at the deadline and loses nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.helpers import notification, post_webhook

DEADLINE_S = 0.5


@pytest.fixture
async def deadline_client(settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    from api.app import create_app

    application = create_app(settings.model_copy(update={"webhook_db_deadline_s": DEADLINE_S}))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://postroom.test") as c:
            yield c


async def test_a_blocked_insert_answers_503_at_the_deadline_and_the_retry_is_stored(
    deadline_client: httpx.AsyncClient, db: Any
) -> None:
    payload = notification("message.created", {"id": "m-deadline"})
    # Another transaction holds the event table: the INSERT waits, as on a silenced connection.
    async with db.engine.connect() as holder:
        await holder.execute(sa.text("BEGIN"))
        await holder.execute(sa.text("LOCK TABLE event IN ACCESS EXCLUSIVE MODE"))
        started = time.monotonic()
        r = await post_webhook(deadline_client, payload)
        took = time.monotonic() - started
        await holder.execute(sa.text("ROLLBACK"))
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "service_unavailable"
    # At the deadline, not at the driver's command timeout (10 s) or the statement timeout (5 s).
    assert DEADLINE_S <= took < DEADLINE_S + 2.0, took

    # Nylas retries a 503: the same notification is stored once and queued, not lost.
    for _ in range(20):
        r = await post_webhook(deadline_client, payload)
        if r.status_code == 200:
            break
        await asyncio.sleep(0.1)  # the cancelled INSERT's connection is being replaced
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "queued"
    again = await post_webhook(deadline_client, payload)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
