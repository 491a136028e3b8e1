"""Through the real worker: a send whose every recipient is suppressed fails permanently
(one attempt, no retry) with `all_recipients_suppressed`, and nothing reaches the server."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from database.models import Event
from database.repositories.reports import suppressions as suppressions_repo
from tests.helpers import wait_for
from tests.smtp_fixtures import create_send_event, create_smtp_account

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture(scope="module")
def publisher(settings: Any) -> Any:
    from worker.app import make_celery

    return make_celery(settings, publisher_only=True)


async def test_all_recipients_suppressed_is_a_permanent_failure(
    db, settings, publisher, smtp_server
) -> None:
    from worker.dispatch import publish

    peer = smtp_server()
    account = await create_smtp_account(db, settings, smtp=peer.credential())
    async with db.transaction() as s:
        await suppressions_repo.add(
            s,
            tenant_id=account.tenant_id,
            rows=[{"email": "gone@example.org", "reason": "user_unknown", "report_id": None}],
        )
    event_id, task_id, _ = await create_send_event(
        db, account=account, kwargs={"to": ["Gone@example.org"], "subject": "s", "body_text": "t"}
    )
    async with db.sessionmaker() as s:
        event = await s.get(Event, event_id)
    assert publish(
        publisher,
        task_name="postroom.mail.send",
        event_id=event_id,
        task_id=task_id,
        kwargs=event.task_kwargs,
    )

    async def finished() -> Event | None:
        async with db.sessionmaker() as s:
            ev = await s.get(Event, uuid.UUID(str(event_id)))
            return ev if ev and ev.status in ("succeeded", "ignored", "dead") else None

    done = await wait_for(finished, timeout=30, message="the send to finish")
    assert done.status == "dead" and done.attempts == 1
    assert "all_recipients_suppressed" in (done.last_error or "")
    assert "gone@example.org" not in (done.last_error or "").lower()
    assert peer.received == []
