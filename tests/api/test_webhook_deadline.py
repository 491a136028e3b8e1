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


class SilentProxy:
    """A TCP hop to PostgreSQL that can go silent: it keeps every connection open and passes
    nothing on, as a partitioned or hung host does (a lock still lets a cancel through)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.silent = False
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                while self.silent:
                    await asyncio.sleep(0.05)
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while self.silent:
            await asyncio.sleep(0.05)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))


async def test_a_silent_database_host_answers_503_at_the_deadline_not_the_drivers_timeout(
    settings: Any,
) -> None:
    from sqlalchemy.engine import make_url

    from api.app import create_app

    url = make_url(settings.database_url)
    proxy = SilentProxy(url.port or 5432)
    port = await proxy.start()
    proxied = url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    application = create_app(
        settings.model_copy(update={"database_url": proxied, "webhook_db_deadline_s": DEADLINE_S})
    )
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://postroom.test") as c:
            warm = await post_webhook(c, notification("message.created", {"id": "m-warm"}))
            assert warm.status_code == 200, warm.text
            proxy.silent = True
            took = []
            for i in range(2):
                started = time.monotonic()
                r = await post_webhook(c, notification("message.created", {"id": f"m-s{i}"}))
                took.append(time.monotonic() - started)
                assert r.status_code == 503, r.text
            # Handing the cut connection back used to wait 10 s for the cancel's answer.
            assert all(t < DEADLINE_S + 1.0 for t in took), took
            proxy.silent = False
            payload = notification("message.created", {"id": "m-after"})
            for _ in range(30):
                r = await post_webhook(c, payload)
                if r.status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert r.status_code == 200 and r.json()["status"] == "queued", r.text
    assert proxy.server is not None
    proxy.server.close()
