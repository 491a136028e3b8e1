"""The webhook replay window: a correctly signed notification whose `time` is too old (or too
far ahead) is refused with 400 and stores nothing; dedupe rows outlive the window."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pydantic
import pytest
import sqlalchemy as sa

from database.models import Event
from settings import WEBHOOK_CLOCK_SKEW_S, Settings
from tests.helpers import notification, post_webhook, tenantless_events

DAY = 86400


async def stored(db: Any, since: Any) -> list[str]:
    """External ids of the webhook events this test stored."""
    return [e.external_id for e in await tenantless_events(db, since)]


def assert_out_of_window(r: httpx.Response, *words: str) -> None:
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "notification_out_of_window"
    for word in words:
        assert word in error["message"]


async def test_an_old_signed_notification_is_refused_and_stores_nothing(
    client: httpx.AsyncClient, db: Any, settings: Any, started_at: Any
) -> None:
    assert settings.webhook_max_age_s == 3 * DAY  # the documented default
    old = notification(
        "message.created", {"id": "m-old"}, nid="n-old", time_=int(time.time()) - 3 * DAY - 60
    )
    assert_out_of_window(await post_webhook(client, old), "older than", "replay")
    assert await stored(db, started_at) == []
    # Nothing was recorded under its id either: the same id with a current time is new.
    fresh = {**old, "time": int(time.time())}
    r = await post_webhook(client, fresh)
    assert r.status_code == 200 and r.json()["status"] == "queued"
    assert await stored(db, started_at) == ["n-old"]


async def test_a_notification_at_the_edge_of_the_window_is_accepted(
    client: httpx.AsyncClient, db: Any, settings: Any, started_at: Any
) -> None:
    edge = int(time.time()) - settings.webhook_max_age_s + 30
    r = await post_webhook(client, notification("message.created", {"id": "m-edge"}, time_=edge))
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "queued"
    assert len(await stored(db, started_at)) == 1


async def test_the_window_follows_its_setting(settings: Any, db: Any, started_at: Any) -> None:
    from api.app import create_app

    app = create_app(settings.model_copy(update={"webhook_max_age_s": 60}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            now = int(time.time())
            inside = await post_webhook(c, notification("message.updated", time_=now - 50))
            outside = await post_webhook(c, notification("message.updated", time_=now - 70))
    assert inside.status_code == 200
    assert_out_of_window(outside, "60 s")
    assert len(await stored(db, started_at)) == 1


async def test_a_notification_from_the_future_is_refused_beyond_the_clock_skew(
    client: httpx.AsyncClient, db: Any, started_at: Any
) -> None:
    now = int(time.time())
    ahead = await post_webhook(
        client, notification("message.updated", time_=now + WEBHOOK_CLOCK_SKEW_S + 120)
    )
    assert_out_of_window(ahead, "future")
    # Clocks differ a little: a minute ahead is fine.
    r = await post_webhook(client, notification("message.updated", time_=now + 60))
    assert r.status_code == 200
    assert len(await stored(db, started_at)) == 1


async def test_time_must_be_unix_seconds_and_may_be_absent(
    client: httpx.AsyncClient, db: Any, started_at: Any
) -> None:
    for bad in ("yesterday", True, [1], "1700000000"):
        payload = {**notification("message.updated"), "time": bad}
        r = await post_webhook(client, payload)
        assert r.status_code == 400, (bad, r.text)
        assert "Unix seconds" in r.json()["error"]["message"]
    untimed = notification("grant.expired")
    del untimed["time"]
    assert (await post_webhook(client, untimed)).status_code == 200
    assert len(await stored(db, started_at)) == 1


async def test_an_unsigned_old_notification_is_still_a_401(client: httpx.AsyncClient) -> None:
    """The window is checked only after the signature: strangers learn nothing from it."""
    old = notification("message.created", time_=0)
    r = await post_webhook(client, old, signature="0" * 64)
    assert r.status_code == 401


def test_event_retention_must_outlive_the_replay_window() -> None:
    """The cleanup deletes finished events (the dedupe keys) after the retention; a replay of a
    purged one must already be outside the window, else settings refuse to load."""
    with pytest.raises(pydantic.ValidationError, match="POSTROOM_WEBHOOK_MAX_AGE_S"):
        Settings(event_retention_days=3, webhook_max_age_s=3 * DAY)
    with pytest.raises(pydantic.ValidationError, match="POSTROOM_EVENT_RETENTION_DAYS"):
        Settings(event_retention_days=1)
    assert Settings(event_retention_days=4, webhook_max_age_s=3 * DAY).event_retention_days == 4
    assert Settings(event_retention_days=1, webhook_max_age_s=3600).webhook_max_age_s == 3600


async def purged_kept(db: Any) -> int:
    count = sa.select(sa.func.count()).select_from(Event).where(Event.external_id == "n-purged")
    async with db.sessionmaker() as s:
        return int((await s.execute(count)).scalar_one())


async def test_a_replay_after_the_cleanup_purged_its_event_is_refused(
    empty_database: None, client: httpx.AsyncClient, db: Any, settings: Any
) -> None:
    # The cleanup purges old events of every tenant: it must find only this test's.
    """End to end: an event finished longer ago than the retention is purged by the cleanup;
    its notification, replayed byte for byte, is then at least that old and is refused."""
    from services.events import outbox

    sent_at = int(time.time()) - settings.event_retention_days * DAY - 60
    old = notification("message.created", {"id": "m-purged"}, nid="n-purged", time_=sent_at)
    async with db.transaction() as s:
        s.add(
            Event(
                source="nylas",
                type="message.created",
                external_id="n-purged",
                task_name="postroom.events.process",
                payload=old,
                status="succeeded",
                received_at=sa.func.to_timestamp(sent_at),
                finished_at=sa.func.to_timestamp(sent_at + 5),
            )
        )
    assert await outbox.cleanup(db, retention_days=settings.event_retention_days) == 1
    assert await purged_kept(db) == 0
    assert_out_of_window(await post_webhook(client, old), "replay")
    assert await purged_kept(db) == 0
