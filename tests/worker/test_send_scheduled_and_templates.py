"""Scheduled sends and templates end to end: POST /v1/messages/send through the real API,
`celery beat` (its outbox sweep releases scheduled sends), Redis, the Celery worker and
aiosmtpd."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from database.models import Event
from tests.api.keys import make_caller
from tests.helpers import ENV, wait_for
from tests.peers import VENV_BIN, Process
from tests.smtp_fixtures import create_smtp_account

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture(scope="module")
def beat() -> Iterator[Process]:
    """One `celery beat` on the session's broker; the tests' sweep interval is 1 s."""
    schedule = Path(tempfile.mkdtemp(prefix="postroom-beat-")) / "schedule"
    argv = [str(VENV_BIN / "celery"), "-A", "worker.app", "beat", "--schedule", str(schedule)]
    proc = Process("beat-sched", argv, {**ENV, "POSTROOM_LOG_LEVEL": "INFO"}).start()
    try:
        proc.wait_log('"beat_leader"', timeout=30)
        yield proc
    finally:
        proc.stop()


async def _setup(db: Any, settings: Any, peer: Any) -> tuple[Any, Any]:
    caller = await make_caller(db)
    tenant = SimpleNamespace(id=caller.tenant_id)
    account = await create_smtp_account(db, settings, smtp=peer.credential(), tenant=tenant)
    return caller, account


async def _event(db: Any, event_id: str) -> Event:
    async with db.sessionmaker() as s:
        return await s.get(Event, uuid.UUID(event_id), populate_existing=True)


def _send(account: Any, **extra: Any) -> dict[str, Any]:
    return {"account_id": str(account.id), "to": [{"email": "bo@example.org"}], **extra}


async def _absent_until(peer: Any, until: datetime, subject: str) -> None:
    """Nothing with this subject reaches the server before `until` (checked all along)."""
    while datetime.now(UTC) < until:
        assert not [r for r in peer.received if r.message["Subject"] == subject], (
            f"{subject!r} arrived before {until.isoformat()}"
        )
        await asyncio.sleep(0.05)


async def test_a_scheduled_send_reaches_the_server_only_after_send_at(
    db, settings, client, smtp_server, beat
) -> None:
    peer = smtp_server()
    caller, account = await _setup(db, settings, peer)
    send_at = datetime.now(UTC) + timedelta(seconds=4)
    r = await client.post(
        "/v1/messages/send",
        json=_send(account, subject="At four", text="Later.", send_at=send_at.isoformat()),
        headers=caller.headers,
    )
    assert r.status_code == 202, r.text
    event_id = r.json()["event_id"]
    shown = (await client.get(f"/v1/events/{event_id}", headers=caller.headers)).json()
    assert shown["status"] == "scheduled"
    assert datetime.fromisoformat(shown["send_at"]) == send_at

    # Beat sweeps every second meanwhile: the event stays scheduled and nothing is sent.
    await _absent_until(peer, send_at - timedelta(milliseconds=300), "At four")
    assert (await _event(db, event_id)).status == "scheduled"

    async def delivered() -> bool:
        return any(r.message["Subject"] == "At four" for r in peer.received)

    await wait_for(delivered, timeout=15, interval=0.05, message="the scheduled mail")
    arrived = datetime.now(UTC)
    assert arrived >= send_at
    # Released by the sweep (1 s here, `outbox_sweep_interval_s`) and sent at once.
    assert arrived - send_at < timedelta(seconds=5), arrived - send_at

    async def succeeded() -> Event | None:
        e = await _event(db, event_id)
        return e if e.status == "succeeded" else None

    event = await wait_for(succeeded, timeout=10, message="the event to succeed")
    assert event.result["recipients_sent"] == 1 and event.not_before == send_at
    assert len([r for r in peer.received if r.message["Subject"] == "At four"]) == 1


async def test_a_cancelled_scheduled_send_never_reaches_the_server(
    db, settings, client, smtp_server, beat, worker
) -> None:
    peer = smtp_server()
    caller, account = await _setup(db, settings, peer)
    send_at = datetime.now(UTC) + timedelta(seconds=2)
    ids = {}
    for subject in ("Cancelled", "Kept"):
        r = await client.post(
            "/v1/messages/send",
            json=_send(account, subject=subject, text="x", send_at=send_at.isoformat()),
            headers=caller.headers,
        )
        assert r.status_code == 202
        ids[subject] = r.json()
    # What POST /v1/events/{id}/cancel does to a scheduled event.
    async with db.transaction() as s:
        await s.execute(
            sa.update(Event)
            .where(Event.id == uuid.UUID(ids["Cancelled"]["event_id"]))
            .values(status="cancelled", finished_at=sa.func.now())
        )

    async def kept() -> bool:
        return any(r.message["Subject"] == "Kept" for r in peer.received)

    await wait_for(kept, timeout=15, message="the send that was not cancelled")
    # Several more sweeps: the cancelled one is never released.
    await asyncio.sleep(2.5)
    assert [r.message["Subject"] for r in peer.received] == ["Kept"]
    cancelled = await _event(db, ids["Cancelled"]["event_id"])
    assert cancelled.status == "cancelled" and cancelled.attempts == 0

    # Even its task message in the broker (published before the cancel) sends nothing:
    # the worker's claim refuses a cancelled event.
    from worker.app import make_celery
    from worker.dispatch import publish

    app = make_celery(settings, publisher_only=True)
    mark = len(worker.log())
    assert publish(
        app,
        task_name="postroom.mail.send",
        event_id=cancelled.id,
        task_id=ids["Cancelled"]["task_id"],
        kwargs=cancelled.task_kwargs,
    )
    # The task has run to its end (it refused the claim) once the worker says it succeeded.
    await wait_for(
        lambda: asyncio.sleep(
            0, f"{ids['Cancelled']['task_id']}] succeeded" in worker.log()[mark:]
        ),
        timeout=15,
        message="the worker to finish the cancelled event's task",
    )
    assert [r.message["Subject"] for r in peer.received] == ["Kept"]
    assert (await _event(db, ids["Cancelled"]["event_id"])).status == "cancelled"


async def test_a_template_is_rendered_into_the_bytes_the_server_receives(
    db, settings, client, smtp_server
) -> None:
    peer = smtp_server()
    caller, account = await _setup(db, settings, peer)
    template = {
        "subject": "Welcome {{ user.name }}",
        "text": "Hi {{ user.name }}, your code is {{ code }}."
        "{% for t in tags %} #{{ t }}{% endfor %}",
        "html": "<p>Hi <b>{{ user.name }}</b>, code {{ code }}</p>",
    }
    r = await client.put("/v1/templates/welcome", json=template, headers=caller.headers)
    assert r.status_code == 201, r.text
    name = "<script>Bo & Co</script>"
    r = await client.post(
        "/v1/messages/send",
        json=_send(
            account,
            template="welcome",
            variables={"user": {"name": name}, "code": "A<1>", "tags": ["x", "y"]},
        ),
        headers=caller.headers,
    )
    assert r.status_code == 202, r.text

    async def arrived() -> bool:
        return bool(peer.received)

    await wait_for(arrived, timeout=20, message="the templated mail")
    msg = peer.received[0].message
    assert msg["Subject"] == f"Welcome {name}"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert text.rstrip("\r\n") == f"Hi {name}, your code is A<1>. #x #y"
    assert "<p>Hi <b>&lt;script&gt;Bo &amp; Co&lt;/script&gt;</b>, code A&lt;1&gt;</p>" in html
    assert "<script>" not in html


async def test_a_sandbox_escape_attempt_renders_nothing(db, settings, client, smtp_server) -> None:
    peer = smtp_server()
    caller, account = await _setup(db, settings, peer)
    h = caller.headers
    # Refused when stored: the template can read nothing but its variables.
    r = await client.put(
        "/v1/templates/evil",
        json={"subject": "x", "text": "{{ ''.__class__.__mro__[1].__subclasses__() }}"},
        headers=h,
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "template_invalid"
    # A key that only the request supplies, and a Jinja2 global: refused at send time.
    sly = {"subject": "Sly", "text": "{{ v[k] }}", "html": "<p>{{ config }}</p>"}
    assert (await client.put("/v1/templates/sly", json=sly, headers=h)).status_code == 201
    for variables in ({"v": "s", "k": "__class__", "config": 1}, {"v": {"a": 1}, "k": "a"}):
        r = await client.post(
            "/v1/messages/send", json=_send(account, template="sly", variables=variables), headers=h
        )
        assert r.status_code == 422, r.text
    assert (await client.get("/v1/templates/evil", headers=h)).status_code == 404
    # A plain send afterwards arrives alone: the refused ones queued nothing.
    r = await client.post("/v1/messages/send", json=_send(account, subject="Plain"), headers=h)
    assert r.status_code == 202
    # The tenant's only event is the plain send, so nothing else can reach the server.
    events = (
        sa.select(sa.func.count()).select_from(Event).where(Event.tenant_id == account.tenant_id)
    )
    async with db.sessionmaker() as s:
        assert (await s.execute(events)).scalar() == 1

    async def arrived() -> bool:
        return bool(peer.received)

    await wait_for(arrived, timeout=20, message="the plain mail")
    assert [m.message["Subject"] for m in peer.received] == ["Plain"]
