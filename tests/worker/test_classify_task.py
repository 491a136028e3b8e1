"""POST /v1/messages/{id}/classify runs postroom.mail.classify on a real worker."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from database.models import Event, Message
from tests.api.keys import make_account, make_caller, make_message
from tests.helpers import wait_for

pytestmark = pytest.mark.usefixtures("worker")


async def test_classify_job_answers_the_verdict_and_stores_it(client: Any, db: Any) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    message = await make_message(
        db,
        caller,
        account,
        subject="Final notice: confirm your password",
        from_email="it-support@micros0ft-help.com",
        text="Confirm your password within 24 hours at http://198.51.100.4/owa or lose access.",
    )
    r = await client.post(f"/v1/messages/{message}/classify", headers=caller.headers)
    assert r.status_code == 202, r.text

    async def finished() -> Event | None:
        async with db.sessionmaker() as s:
            ev = await s.get(Event, uuid.UUID(r.json()["event_id"]))
            return ev if ev is not None and ev.status in ("succeeded", "dead") else None

    event = await wait_for(finished, message="the classify job to finish")
    assert event.status == "succeeded", event.last_error
    result = event.result or {}
    assert set(result) == {"status", "is_spam", "spam_score", "indicators", "category"}
    assert result["status"] == "success" and result["is_spam"] is True
    assert {
        "lookalike_sender_domain",
        "link_to_ip_address",
        "urgency_wording",
        "credential_request_wording",
    } <= set(result["indicators"])
    async with db.sessionmaker() as s:
        row = await s.get(Message, message)
    assert row is not None and row.spam_score == result["spam_score"] and row.is_spam is True

    shown = await client.get(f"/v1/messages/{message}", headers=caller.headers)
    assert shown.status_code == 200
    assert shown.json()["spam"]["is_spam"] is True
    assert shown.json()["spam"]["indicators"] == result["indicators"]
    assert shown.json()["category"] == result["category"]
