"""Image previews end to end: a mail with a JPEG, a PNG, a decompression bomb, a truncated
image and a PDF is delivered into Dovecot and synced by the real worker; the bulk thumbnail
task that the sync publishes makes the two previews, refuses the hostile two, and the API
serves them (decoded back here); the cleanup removes them with their message."""

from __future__ import annotations

import io
import uuid
from email.message import EmailMessage
from typing import Any

import httpx
import sqlalchemy as sa
from PIL import Image

from database.models import AttachmentThumbnail, Event, EventStatus, Message
from services.messages.thumbnails import purge_deleted
from tests.api.keys import make_caller
from tests.factories import create_tenant
from tests.helpers import wait_for
from tests.imap_fixtures import Dovecot
from tests.imap_support import create_imap_account
from tests.services.test_thumbnails import jpeg, png, png_bomb
from tests.worker.test_mail_tasks import _finished, _queue


def _mail() -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.com", "b@example.com", "photos"
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@example.com>"
    msg.set_content("Pictures attached.")
    whole = jpeg()
    for name, data, maintype, subtype in (
        ("photo.jpg", whole, "image", "jpeg"),
        ("drawing.png", png(), "image", "png"),
        ("bomb.png", png_bomb(), "image", "png"),
        ("cut.jpg", whole[: len(whole) // 2], "image", "jpeg"),
        ("doc.pdf", b"%PDF-1.4\n%%EOF\n", "application", "pdf"),
    ):
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes()


async def _thumbnails(db: Any, message_id: uuid.UUID) -> list[AttachmentThumbnail]:
    async with db.transaction() as s:
        stmt = sa.select(AttachmentThumbnail).where(AttachmentThumbnail.message_id == message_id)
        return list((await s.execute(stmt)).scalars())


async def test_a_synced_mail_gets_previews_of_its_images_and_refuses_hostile_ones(
    db: Any,
    settings: Any,
    worker: Any,
    client: httpx.AsyncClient,
    dovecot: Dovecot,
    mailbox_user: str,
) -> None:
    dovecot.deliver(mailbox_user, _mail())
    tenant = await create_tenant(db)
    account = await create_imap_account(db, settings, dovecot, mailbox_user, tenant=tenant)
    caller = await make_caller(db, tenant=tenant.name)
    ids = {
        "account_id": str(account.id),
        "tenant_id": str(account.tenant_id),
        "user_id": str(account.user_id),
    }
    sync = await _queue(
        db,
        settings,
        task_name="postroom.mail.sync_account",
        kwargs={**ids, "folder": "INBOX", "full": False},
        tenant_id=account.tenant_id,
        account_id=account.id,
    )
    event = await wait_for(lambda: _finished(db, sync), timeout=60, message="sync")
    assert event.status == EventStatus.succeeded, event.last_error
    async with db.transaction() as s:
        [message] = (
            await s.execute(sa.select(Message).where(Message.account_id == account.id))
        ).scalars()
    detail = (await client.get(f"/v1/messages/{message.id}", headers=caller.headers)).json()
    atts = {a["filename"]: a["id"] for a in detail["attachments"]}
    assert set(atts) == {"photo.jpg", "drawing.png", "bomb.png", "cut.jpg", "doc.pdf"}

    async def four() -> list[AttachmentThumbnail] | None:
        rows = await _thumbnails(db, message.id)
        return rows if len(rows) == 4 else None

    rows = await wait_for(four, timeout=60, message="thumbnail rows")
    async with db.transaction() as s:
        job = (
            await s.execute(
                sa.select(Event).where(
                    Event.account_id == account.id,
                    Event.task_name == "postroom.mail.generate_thumbnail",
                )
            )
        ).scalar_one()
    assert job.status == EventStatus.succeeded, job.last_error
    assert job.result == {"status": "success", "thumbnails": 2, "refused": 2}
    reasons = {r.attachment_id: r.reason for r in rows if r.status == "failed"}
    assert sorted(reasons.values()) == ["too_many_pixels", "unreadable"]

    def url(name: str) -> str:
        return f"/v1/messages/{message.id}/attachments/{atts[name]}/thumbnail"

    for name, media, fmt in (
        ("photo.jpg", "image/webp", "WEBP"),
        ("drawing.png", "image/png", "PNG"),
    ):
        r = await client.get(url(name), headers=caller.headers)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == media
        back = Image.open(io.BytesIO(r.content))
        back.load()
        assert back.format == fmt and max(back.size) == 256
    for name in ("bomb.png", "cut.jpg", "doc.pdf"):
        r = await client.get(url(name), headers=caller.headers)
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "thumbnail_not_available"
    other = await make_caller(db)
    r = await client.get(url("photo.jpg"), headers=other.headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"

    # Thumbnails go with their message (the cleanup beat task's part).
    async with db.transaction() as s:
        await s.execute(
            sa.update(Message).where(Message.id == message.id).values(deleted_at=sa.func.now())
        )
    assert await purge_deleted(db) >= 4
    assert await _thumbnails(db, message.id) == []
