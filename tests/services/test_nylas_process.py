"""services.nylas.process without a worker: what postroom.events.process does with a claimed
notification, called in-process against the real PostgreSQL (plain async tests reach the
store, classify and rules flow now that it lives in services)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import sqlalchemy as sa

from database.models import Event, EventSource, Message
from database.repositories.events import lifecycle
from database.task_names import TaskName
from services.events.unit_of_work import record_event
from services.nylas.process import process_event
from tests.factories import create_nylas_account
from tests.fakes.nylas_server import make_message
from tests.helpers import notification
from worker.runtime import Runtime


async def claimed(db: Any, body: dict[str, Any]) -> Event:
    async with db.transaction() as s:
        job = await record_event(
            s,
            task_name=TaskName.process_event,
            kwargs={},
            source=EventSource.nylas,
            type=body["type"],
            stale_after_s=60,
            external_id=body["id"],
            payload=body,
        )
    assert job is not None
    async with db.transaction() as s:
        event = await lifecycle.claim(s, event_id=job.event_id, task_id=job.task_id, lease_s=60)
    assert event is not None
    return event


async def test_a_lone_new_message_is_stored_classified_and_its_run_finished_in_one_transaction(
    db: Any, settings: Any
) -> None:
    account = await create_nylas_account(db)
    obj = make_message(
        account.grant_id,
        f"m-{uuid.uuid4().hex[:8]}",
        body="<p>Thanks, I applied your patch to the build script; the tests pass here.</p>",
        **{"from": [{"name": "Alice", "email": "alice@example.org"}]},
    )
    event = await claimed(db, notification("message.created", obj, grant_id=account.grant_id))
    rt = Runtime(settings=settings, loop=asyncio.get_running_loop(), db=db)

    async with db.transaction() as session:
        outcome, batched = await process_event(session, event, rt=rt, task_id="t-1")
    assert batched == [] and outcome.status == "succeeded" and outcome.publish == []
    assert outcome.result["action"] == "created"
    async with db.sessionmaker() as s:
        message = (
            await s.execute(sa.select(Message).where(Message.provider_id == obj["id"]))
        ).scalar_one()
        run = (
            await s.execute(
                sa.select(Event).where(Event.external_id == f"{event.id}:classify:{message.id}")
            )
        ).scalar_one()
    assert message.spam_score is not None and message.is_spam is False
    assert run.status == "succeeded"
    assert [(st["name"], st["state"]) for st in run.steps] == [
        ("classify", "succeeded"),
        ("apply_rules", "succeeded"),
    ]
