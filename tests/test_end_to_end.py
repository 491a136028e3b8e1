"""As a client sees it: a real uvicorn process, a real Celery worker and beat."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa

from database.models import Event, Message
from tests.factories import create_nylas_account
from tests.fakes.nylas_server import make_message
from tests.helpers import ENV, notification, sign, wait_for
from tests.peers import Process, RedisServer, free_port, uvicorn_api, wait_port


@pytest.fixture(scope="module")
def api_url(database_name: str) -> Iterator[str]:
    port = free_port()
    proc = uvicorn_api(ENV, port).start()
    try:
        wait_port(port, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


def beat(env: dict[str, str]) -> Process:
    from tests.peers import VENV_BIN

    schedule = f"/tmp/postroom-beat-{uuid.uuid4().hex}"
    return Process(
        "beat",
        [
            str(VENV_BIN / "celery"),
            "-A",
            "worker.app",
            "beat",
            "-l",
            "INFO",
            "--schedule",
            schedule,
        ],
        env,
    )


async def test_signed_post_to_a_real_server_becomes_a_message_row(api_url, worker, db) -> None:
    account = await create_nylas_account(db)
    body = httpx.Request(
        "POST",
        "/",
        json=notification(
            "message.created", make_message(account.grant_id, "e2e-1", subject="end to end")
        ),
    ).content
    start = time.monotonic()
    async with httpx.AsyncClient(base_url=api_url) as c:
        r = await c.post(
            "/webhooks/nylas",
            content=body,
            headers={"x-nylas-signature": sign(body), "content-type": "application/json"},
        )
    ack = time.monotonic() - start
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "queued"
    assert r.headers.get("x-request-id")

    async def stored() -> Message | None:
        async with db.sessionmaker() as s:
            return (
                await s.execute(sa.select(Message).where(Message.provider_id == "e2e-1"))
            ).scalar()

    row = await wait_for(stored, timeout=20, message="the message row")
    assert row.subject == "end to end"
    assert row.account_id == account.id
    assert ack < 2.0


async def test_events_published_while_the_broker_was_down_are_delivered_by_the_sweeper(
    empty_database, worker, db, settings
) -> None:
    """Publish fails (Redis unreachable) -> 200 anyway -> beat's outbox sweeper publishes.

    Beat's sweeper re-publishes every tenant's stale events: only this test's may exist."""
    from api.app import create_app

    account = await create_nylas_account(db)
    dead_broker = RedisServer()  # never started: connection refused
    app = create_app(settings.model_copy(update={"redis_url": dead_broker.url}))
    body = httpx.Request(
        "POST", "/", json=notification("message.created", make_message(account.grant_id, "late-1"))
    ).content
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            r = await c.post(
                "/webhooks/nylas", content=body, headers={"x-nylas-signature": sign(body)}
            )
    assert r.status_code == 200 and r.json()["status"] == "queued"
    event_id = uuid.UUID(r.json()["event_id"])
    async with db.sessionmaker() as s:
        assert (await s.get(Event, event_id)).status == "received"

    scheduler = beat(ENV).start()
    try:

        async def done() -> Event | None:
            async with db.sessionmaker() as s:
                ev = await s.get(Event, event_id)
                return ev if ev and ev.status == "succeeded" else None

        event = await wait_for(done, timeout=30, message="the sweeper to deliver the event")
    finally:
        scheduler.stop()
    assert event.publish_count >= 2
    async with db.sessionmaker() as s:
        count = (
            await s.execute(
                sa.select(sa.func.count())
                .select_from(Message)
                .where(Message.account_id == account.id, Message.provider_id == "late-1")
            )
        ).scalar()
    assert count == 1
