"""A mailbox built to hurt parsers, synced and classified end to end by the real worker.

Before the linear-time work, a 1 MB HTML body of `<` cost the classifier hours and a header
with a long run of spaces cost seconds per 20,000; the sync batch holding such a mail never
committed, so the folder never advanced. Here Dovecot holds both beside ordinary mail, and the
`sync-and-classify` workflow must store and classify every message within a minute.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from database.models import Event, Message, Tenant
from tests.api.keys import make_caller
from tests.helpers import wait_for
from tests.imap_support import append_corpus, create_imap_account

pytestmark = pytest.mark.usefixtures("worker")


def _mail(subject: bytes, content_type: bytes, body: bytes, n: int) -> bytes:
    return (
        b"From: Sender <sender%d@example.org>\r\nTo: you@example.com\r\n"
        b"Subject: " + subject + b"\r\n"
        b"Message-ID: <hostile-%d@example.org>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: " + content_type + b"\r\n\r\n" + body + b"\r\n"
    ) % (n, n)


LT_HTML = _mail(b"Angle brackets", b"text/html; charset=utf-8", b"<" * 1_000_000, 1)
SPACE_HEADER = _mail(b"spaces" + b" " * 200_000 + b"end", b"text/plain", b"Plain body.", 2)
HAM = _mail(b"Re: build script", b"text/plain", b"Thanks, the patch works here.", 3)
LT_A_HTML = _mail(b"Open anchors", b"text/html", b"<a href=x " * 50_000, 4)


async def test_a_mailbox_of_parser_bombs_syncs_and_classifies_within_a_minute(
    client: Any, db: Any, settings: Any, dovecot: Any, mailbox_user: str
) -> None:
    caller = await make_caller(db)
    async with db.sessionmaker() as s:
        tenant = await s.get(Tenant, caller.tenant_id)
    account = await create_imap_account(db, settings, dovecot, mailbox_user, tenant=tenant)
    await append_corpus(
        dovecot, mailbox_user, {}, extra={"INBOX": [LT_HTML, SPACE_HEADER, HAM, LT_A_HTML]}
    )

    r = await client.post(
        "/v1/workflows/sync-and-classify",
        json={"account_id": str(account.id)},
        headers=caller.headers,
    )
    assert r.status_code == 202, r.text
    event_id = uuid.UUID(r.json()["event_id"])

    async def finished() -> Event | None:
        async with db.sessionmaker() as s:
            ev = await s.get(Event, event_id)
            return ev if ev and ev.status in ("succeeded", "dead") else None

    event = await wait_for(finished, timeout=60, message="sync-and-classify of the hostile box")
    assert event.status == "succeeded", (event.last_error, event.steps)

    async with db.sessionmaker() as s:
        rows = (
            await s.execute(sa.select(Message).where(Message.account_id == account.id))
        ).scalars()
        by_id = {m.message_id_header: m for m in rows}
    assert set(by_id) == {f"<hostile-{n}@example.org>" for n in (1, 2, 3, 4)}
    # Every message was classified (the classify step ran over all four).
    assert all(m.spam_score is not None for m in by_id.values()), {
        k: m.spam_score for k, m in by_id.items()
    }
    spaced = by_id["<hostile-2@example.org>"]
    assert spaced.subject is not None
    # Header values are cut at 64 KB before decoding (docs/security.md, MIME), then trimmed:
    # the run of spaces is dropped with what followed it past the cut.
    assert spaced.subject == "spaces"

    # The API lists them all, with the classifier's answer.
    listed = await client.get(
        "/v1/messages", params={"account_id": str(account.id)}, headers=caller.headers
    )
    assert listed.status_code == 200
    assert len(listed.json()["data"]) == 4
    assert all(m["spam"] is not None for m in listed.json()["data"])
