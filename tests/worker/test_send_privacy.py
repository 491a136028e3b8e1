"""A send's mail never reaches the broker, the result backend, Flower's events, the event row,
the dead letter or the worker's log: POST /v1/messages/send through the real API, Redis,
Celery worker and aiosmtpd, with every Redis command recorded (MONITOR) and read back.

Each mail has a distinctive subject, bodies, recipient addresses and display names; the test
looks for each of them (plainly and inside base64 message bodies) in everything written to
Redis while it ran, in every key left in Redis, in the event and dead-letter rows (all
columns), in GET /v1/tasks, GET /v1/dead-letters and in the worker's log. The mail that the
SMTP server received is still checked complete, so a test that sends nothing cannot pass.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import re
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa

from database.models import Event
from tests import smtp_fixtures
from tests.api.keys import make_caller
from tests.helpers import wait_for
from tests.smtp_fixtures import create_smtp_account

pytestmark = pytest.mark.usefixtures("worker")

_BASE64_RUN = re.compile(rb"[A-Za-z0-9+/]{24,}={0,2}")


@dataclass
class Mail:
    """A send request whose every private part is unique to this test run."""

    token: str = field(default_factory=lambda: secrets.token_hex(6))

    @property
    def to(self) -> dict[str, str]:
        return {"email": f"to-{self.token}@rcpt.example.org", "name": f"Tapir {self.token}"}

    @property
    def cc(self) -> dict[str, str]:
        return {"email": f"cc-{self.token}@rcpt.example.org", "name": f"Okapi {self.token}"}

    @property
    def bcc(self) -> str:
        return f"bcc-{self.token}@hidden.example.net"

    @property
    def subject(self) -> str:
        return f"Zebra subject {self.token}"

    @property
    def text(self) -> str:
        return f"Quokka body text {self.token}, second line.\nThird line."

    @property
    def html(self) -> str:
        return f"<p>Narwhal html {self.token}</p>"

    @property
    def addresses(self) -> list[str]:
        return [self.to["email"], self.cc["email"], self.bcc]

    def needles(self) -> list[str]:
        """What must never show up outside the draft, the ledger and the sent message."""
        return [
            *self.addresses,
            self.to["name"],
            self.cc["name"],
            self.subject,
            f"Quokka body text {self.token}",
            f"Narwhal html {self.token}",
        ]

    def body(self, account_id: uuid.UUID) -> dict[str, Any]:
        return {
            "account_id": str(account_id),
            "to": [self.to],
            "cc": [self.cc],
            "bcc": [{"email": self.bcc}],
            "subject": self.subject,
            "text": self.text,
            "html": self.html,
        }


def readable(raw: bytes) -> str:
    """`raw` plus the decoding of every base64 run in it (kombu envelopes carry their body,
    and Celery events theirs, base64-encoded), lowercased for the search."""
    parts = [raw]
    for run in _BASE64_RUN.findall(raw):
        try:
            parts.append(base64.b64decode(run + b"=" * (-len(run) % 4)))
        except (binascii.Error, ValueError):
            continue
    return b"\n".join(parts).decode("utf-8", errors="replace").lower()


def leaks(where: str, text: str | bytes, mail: Mail) -> list[str]:
    blob = readable(text if isinstance(text, bytes) else text.encode())
    return [f"{where}: {n!r}" for n in mail.needles() if n.lower() in blob]


class RedisRecorder:
    """Every command any client sends to Redis while it runs (MONITOR), as raw lines."""

    def __init__(self, url: str) -> None:
        self.redis = aioredis.Redis.from_url(url)
        self.lines: list[bytes] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        started = asyncio.Event()

        async def run() -> None:
            async with self.redis.monitor() as monitor:
                started.set()
                assert monitor.connection is not None
                while True:
                    line = await monitor.connection.read_response(disable_decoding=True)
                    self.lines.append(line if isinstance(line, bytes) else str(line).encode())

        self._task = asyncio.create_task(run())
        await asyncio.wait_for(started.wait(), 5)

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.redis.aclose()

    def commands(self, verb: str) -> list[bytes]:
        return [line for line in self.lines if f'"{verb}"'.encode() in line.upper()]


async def redis_contents(url: str) -> dict[str, bytes]:
    """Every key of the Redis with its value, whatever its type."""
    r = aioredis.Redis.from_url(url)
    out: dict[str, bytes] = {}
    try:
        async for key in r.scan_iter(count=1000):
            kind = (await r.type(key)).decode()
            values: list[Any]
            if kind == "string":
                values = [await r.get(key)]
            elif kind == "list":
                values = await r.lrange(key, 0, -1)
            elif kind == "hash":
                values = [x for kv in (await r.hgetall(key)).items() for x in kv]
            elif kind == "set":
                values = list(await r.smembers(key))
            elif kind == "zset":
                values = [m for m, _ in await r.zrange(key, 0, -1, withscores=True)]
            else:
                values = []
            out[key.decode()] = b"\n".join(v for v in values if isinstance(v, bytes))
        return out
    finally:
        await r.aclose()


@pytest.fixture
async def recorder(redis_server: Any) -> AsyncIterator[RedisRecorder]:
    rec = RedisRecorder(redis_server.url)
    await rec.start()
    yield rec
    await rec.stop()


async def _event(db: Any, event_id: uuid.UUID, statuses: tuple[str, ...]) -> Event | None:
    async with db.sessionmaker() as s:
        event = await s.get(Event, event_id)
    return event if event is not None and event.status in statuses else None


async def _row_json(db: Any, table: str, column: str, value: uuid.UUID) -> str:
    async with db.sessionmaker() as s:
        rows = (
            await s.execute(
                sa.text(f"SELECT row_to_json(t)::text FROM {table} t WHERE {column} = :v"),
                {"v": value},
            )
        ).scalars()
        found = list(rows)
    assert found, f"no {table} row for {value}"
    return "\n".join(found)


async def _everything_outside(
    *,
    db: Any,
    client: Any,
    caller: Any,
    recorder: RedisRecorder,
    worker: Any,
    log_from: int,
    redis_url: str,
    event_id: uuid.UUID,
    task_id: str,
    mail: Mail,
) -> list[str]:
    """Every place the mail must not be, searched; the findings (empty when clean)."""
    found: list[str] = []
    for i, line in enumerate(recorder.lines):
        found += leaks(f"redis command {i}", line, mail)
    for key, value in (await redis_contents(redis_url)).items():
        found += leaks(f"redis key {key}", key.encode() + b"\n" + value, mail)
    found += leaks("event row", await _row_json(db, "event", "id", event_id), mail)
    task = await client.get(f"/v1/tasks/{task_id}", headers=caller.headers)
    assert task.status_code == 200
    found += leaks("GET /v1/tasks", task.text, mail)
    letters = await client.get("/v1/dead-letters", headers=caller.headers)
    assert letters.status_code == 200
    found += leaks("GET /v1/dead-letters", letters.text, mail)
    for letter in letters.json()["data"]:
        one = await client.get(f"/v1/dead-letters/{letter['id']}", headers=caller.headers)
        found += leaks("GET /v1/dead-letters/{id}", one.text, mail)
    found += leaks("worker log", worker.log()[log_from:], mail)
    return found


async def _setup(db: Any, settings: Any, peer: Any) -> tuple[Any, Any]:
    caller = await make_caller(db)
    account = await create_smtp_account(
        db, settings, smtp=peer.credential(), tenant=SimpleNamespace(id=caller.tenant_id)
    )
    return caller, account


def _check_delivered(peer: Any, mail: Mail) -> None:
    """The mail at the SMTP server is complete: envelope, headers and both bodies."""
    [got] = peer.received
    assert got.mail_from == smtp_fixtures.USERNAME
    assert sorted(got.rcpt_tos) == sorted(mail.addresses)
    msg = got.message
    assert msg["Subject"] == mail.subject
    [to] = msg["To"].addresses
    assert (to.addr_spec, to.display_name) == (mail.to["email"], mail.to["name"])
    [cc] = msg["Cc"].addresses
    assert (cc.addr_spec, cc.display_name) == (mail.cc["email"], mail.cc["name"])
    assert msg["Bcc"] is None and mail.bcc.encode() not in got.data
    # The wire has CRLF line ends; the bodies are otherwise exactly what was asked.
    assert msg.get_body(("plain",)).get_content().replace("\r\n", "\n").rstrip() == mail.text
    assert msg.get_body(("html",)).get_content().replace("\r\n", "\n").rstrip() == mail.html


async def test_sent_mail_stays_out_of_redis_events_results_and_logs(
    db, settings, client, smtp_server, recorder, worker, redis_server
) -> None:
    # Every recipient is greylisted once (the 450 quotes the address): one Celery retry too.
    peer = smtp_server(mode="rcpt_4xx_then_2xx")
    caller, account = await _setup(db, settings, peer)
    mail = Mail()
    log_from = len(worker.log())

    r = await client.post("/v1/messages/send", json=mail.body(account.id), headers=caller.headers)
    assert r.status_code == 202, r.text
    event_id, task_id = uuid.UUID(r.json()["event_id"]), r.json()["task_id"]
    event = await wait_for(
        lambda: _event(db, event_id, ("succeeded", "dead")), timeout=60, message="the send"
    )
    assert event.status == "succeeded", event.last_error
    assert event.attempts == 2, "the greylisting answer was retried once"
    assert [h.get("error") for h in event.history if h.get("error")], "the retry is recorded"
    _check_delivered(peer, mail)
    task = (await client.get(f"/v1/tasks/{task_id}", headers=caller.headers)).json()
    assert task["state"] == "SUCCESS" and task["result"]["recipients_sent"] == 3

    # The broker, the result backend and Celery's events were used (else the scan is empty).
    assert recorder.commands("LPUSH") and recorder.commands("PUBLISH")
    assert any(b"celery-task-meta-" + task_id.encode() in line for line in recorder.lines)
    found = await _everything_outside(
        db=db,
        client=client,
        caller=caller,
        recorder=recorder,
        worker=worker,
        log_from=log_from,
        redis_url=redis_server.url,
        event_id=event_id,
        task_id=task_id,
        mail=mail,
    )
    assert found == []


async def test_refused_mail_stays_out_of_the_dead_letter_and_replay_rereads_the_draft(
    db, settings, client, smtp_server, recorder, worker, redis_server
) -> None:
    # Every RCPT refused with a 550 that quotes the address: permanent, one dead letter.
    peer = smtp_server(mode="rcpt_5xx")
    caller, account = await _setup(db, settings, peer)
    mail = Mail()
    log_from = len(worker.log())

    r = await client.post("/v1/messages/send", json=mail.body(account.id), headers=caller.headers)
    assert r.status_code == 202, r.text
    event_id, task_id = uuid.UUID(r.json()["event_id"]), r.json()["task_id"]
    event = await wait_for(
        lambda: _event(db, event_id, ("succeeded", "dead")), timeout=60, message="the send"
    )
    assert event.status == "dead" and peer.received == []
    letters = (await client.get("/v1/dead-letters", headers=caller.headers)).json()["data"]
    [letter] = [x for x in letters if x["event_id"] == str(event_id)]
    assert letter["exception_type"] == "SmtpRejected"
    # Tenants see the reply's codes, never the server's own words (docs/destinations.md); the
    # full reply stays on the ledger row for operators.
    assert "(550 5.1.1)" in letter["exception_message"]
    assert "Recipient address rejected" not in letter["exception_message"]
    assert letter["args"] == []
    assert set(letter["kwargs"]) == {"event_id", "account_id", "tenant_id", "user_id"}
    assert (await client.get(f"/v1/tasks/{task_id}", headers=caller.headers)).json()[
        "state"
    ] == "FAILURE"
    found = await _everything_outside(
        db=db,
        client=client,
        caller=caller,
        recorder=recorder,
        worker=worker,
        log_from=log_from,
        redis_url=redis_server.url,
        event_id=event_id,
        task_id=task_id,
        mail=mail,
    )
    found += leaks(
        "dead_letter row", await _row_json(db, "dead_letter", "event_id", event_id), mail
    )
    assert found == []

    # A replay publishes ids again; the task reads the draft and sends the whole mail.
    peer.handler.mode = "ok"
    replay = await client.post(f"/v1/dead-letters/{letter['id']}/replay", headers=caller.headers)
    assert replay.status_code == 202, replay.text
    event = await wait_for(
        lambda: _event(db, event_id, ("succeeded",)), timeout=60, message="the replayed send"
    )
    _check_delivered(peer, mail)
    assert event.result["recipients_sent"] == 3
    found = await _everything_outside(
        db=db,
        client=client,
        caller=caller,
        recorder=recorder,
        worker=worker,
        log_from=log_from,
        redis_url=redis_server.url,
        event_id=event_id,
        task_id=replay.json()["task_id"],
        mail=mail,
    )
    assert found == []
