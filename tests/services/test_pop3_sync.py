"""POP3 sync and delete against Dovecot's POP3 server, the maildrop read back over POP3/IMAP."""

from __future__ import annotations

import re
from email.message import EmailMessage
from typing import Any

import pytest
import sqlalchemy as sa

from database.models import Attachment, Folder, Message
from services.accounts.access import pop3_config
from services.errors import BadCredentials, ValidationFailed
from services.imap.sync import run_sync
from services.messages.delete import delete_messages
from services.pop3.client import Pop3Client, Pop3Config, unstuff
from services.pop3.sync import sync_maildrop
from tests.imap_fixtures import GREETING, PASSWORD, Dovecot
from tests.imap_support import create_imap_account, create_pop3_account


def _corpus(count: int) -> list[bytes]:
    from scripts.corpus import messages, raw_message

    return [raw_message(p) for p in list(messages("easy-ham-1"))[:count]]


def _with_attachment() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Ana <ana@example.com>"
    msg["To"] = "bob@example.com"
    msg["Subject"] = "report attached"
    msg["Message-ID"] = "<report-1@example.com>"
    msg.set_content("See the file.\n.a line that starts with a dot\n..and two\n")
    msg.add_attachment(b"%PDF-1.4 fake", maintype="application", subtype="pdf", filename="r.pdf")
    return msg.as_bytes().replace(b"\n", b"\r\n")


async def _config(db: Any, settings: Any, account: Any) -> Pop3Config:
    async with db.transaction() as s:
        return await pop3_config(s, settings, account)


async def _sync(
    db: Any, settings: Any, account: Any, *, pipelining: bool = True, **tweak: Any
) -> tuple[Any, Pop3Client]:
    config = await _config(db, settings, account)
    for key, value in tweak.items():
        setattr(config, key, value)
    client = await Pop3Client(config).connect()
    try:
        if not pipelining:  # as a server without PIPELINING in its CAPA
            client.capabilities.discard("PIPELINING")
        result = await sync_maildrop(db, account=account, client=client)
    finally:
        await client.close()
    return result, client


async def _rows(db: Any, account: Any) -> list[Message]:
    async with db.transaction() as s:
        stmt = sa.select(Message).where(Message.account_id == account.id)
        return list((await s.execute(stmt)).scalars())


async def _server_uidls(dovecot: Dovecot, user: str) -> list[str]:
    config = Pop3Config.from_credentials(dovecot.pop3_credentials(user))
    async with Pop3Client(config) as client:
        return [uidl for _, uidl in await client.uidl()]


async def test_sync_stores_every_message_once_and_the_second_sync_retrieves_nothing(
    db: Any, settings: Any, dovecot: Dovecot, mailbox_user: str
) -> None:
    raws = _corpus(30)
    for raw in raws:
        dovecot.deliver(mailbox_user, raw)
    account = await create_pop3_account(db, settings, dovecot, mailbox_user)

    first, client = await _sync(db, settings, account)

    assert first.as_dict() == {
        "status": "success",
        "folders": 1,
        "new": 30,
        "updated": 0,
        "deleted": 0,
    }
    assert client.retrieved == 30 and client.has("PIPELINING")
    rows = await _rows(db, account)
    uidls = await _server_uidls(dovecot, mailbox_user)
    assert sorted(r.provider_id for r in rows) == sorted(uidls) and len(set(uidls)) == 30
    assert {tuple(r.labels) for r in rows} == {("INBOX",)}
    assert all(r.unread and not r.starred and r.deleted_at is None for r in rows)
    async with db.transaction() as s:
        mine = sa.select(Folder).where(Folder.account_id == account.id)
        folders = list((await s.execute(mine)).scalars())
    assert [(f.name, f.role) for f in folders] == [("INBOX", "inbox")]
    assert {r.folder_id for r in rows} == {folders[0].id}

    second, client = await _sync(db, settings, account)

    assert client.retrieved == 0, "the second sync downloaded a message again"
    assert (second.new, second.updated, second.deleted) == (0, 0, 0)
    assert len(await _rows(db, account)) == 30
    # A sync leaves the maildrop as it was.
    assert await _server_uidls(dovecot, mailbox_user) == uidls
    log = (dovecot.base / "dovecot.log").read_text()
    assert re.search(r"retr=30/\d+, del=0/30", log) and re.search(r"retr=0/0, del=0/30", log)


async def test_a_pop3_message_is_stored_exactly_as_the_imap_sync_stores_it(
    db: Any, settings: Any, dovecot: Dovecot, mailbox_user: str
) -> None:
    dovecot.deliver(mailbox_user, _with_attachment())
    for raw in _corpus(3):
        dovecot.deliver(mailbox_user, raw)
    pop3 = await create_pop3_account(db, settings, dovecot, mailbox_user)
    imap = await create_imap_account(db, settings, dovecot, mailbox_user)

    await _sync(db, settings, pop3)
    await run_sync(db, settings, tenant_id=imap.tenant_id, account_id=imap.id, folder="INBOX")

    columns = (
        "message_id_header",
        "subject",
        "from_email",
        "from_name",
        "to_addrs",
        "date",
        "text",
        "html",
        "snippet",
        "headers",
        "has_attachments",
        "parse_warnings",
        "labels",
    )
    by_id = {}
    for account in (pop3, imap):
        rows = await _rows(db, account)
        assert len(rows) == 4
        by_id[account.provider] = {
            r.message_id_header: tuple(getattr(r, c) for c in columns) for r in rows
        }
    assert by_id["pop3"] == by_id["imap"]
    async with db.transaction() as s:
        stmt = (
            sa.select(Attachment.filename, Attachment.size, Attachment.sha256, Message.account_id)
            .join(Message, Message.id == Attachment.message_id)
            .order_by(Message.account_id)
        )
        atts = (await s.execute(stmt)).all()
    assert (
        {(a.filename, a.size, a.sha256) for a in atts if a.account_id == pop3.id}
        == {(a.filename, a.size, a.sha256) for a in atts if a.account_id == imap.id}
        != set()
    )
    report = next(r for r in await _rows(db, pop3) if r.subject == "report attached")
    # Byte-stuffed lines come back with one dot, as written.
    assert ".a line that starts with a dot\r\n..and two\r\n" in (report.text or "")


async def test_without_pipelining_each_message_is_retrieved_in_turn(
    db: Any, settings: Any, dovecot: Dovecot, mailbox_user: str
) -> None:
    for raw in _corpus(8):
        dovecot.deliver(mailbox_user, raw)
    account = await create_pop3_account(db, settings, dovecot, mailbox_user)

    result, client = await _sync(db, settings, account, pipelining=False)

    assert not client.has("PIPELINING") and client.retrieved == 8
    assert result.new == 8 and len(await _rows(db, account)) == 8


async def test_a_message_gone_from_the_server_is_marked_deleted(
    db: Any, settings: Any, dovecot: Dovecot, mailbox_user: str
) -> None:
    for raw in _corpus(5):
        dovecot.deliver(mailbox_user, raw)
    account = await create_pop3_account(db, settings, dovecot, mailbox_user)
    await _sync(db, settings, account)
    # Another mail client removes the third message (POP3 DELE, committed by QUIT).
    other = Pop3Client(Pop3Config.from_credentials(dovecot.pop3_credentials(mailbox_user)))
    await other.connect()
    listing = await other.uidl()
    gone = listing[2][1]
    await other.delete([listing[2][0]])
    await other.quit()
    dovecot.deliver(mailbox_user, _with_attachment())

    result, client = await _sync(db, settings, account)

    assert (result.new, result.deleted) == (1, 1) and client.retrieved == 1
    rows = {r.provider_id: r for r in await _rows(db, account)}
    assert rows[gone].deleted_at is not None
    assert [p for p, r in rows.items() if r.deleted_at is not None] == [gone]
    assert len(rows) == 6


async def test_permanent_delete_removes_from_the_maildrop_soft_delete_only_hides(
    db: Any, settings: Any, dovecot: Dovecot, mailbox_user: str
) -> None:
    for raw in _corpus(6):
        dovecot.deliver(mailbox_user, raw)
    account = await create_pop3_account(db, settings, dovecot, mailbox_user)
    await _sync(db, settings, account)
    rows = sorted(await _rows(db, account), key=lambda r: r.provider_id)
    hard, soft = rows[:2], rows[2:4]

    n_hard = await delete_messages(
        db,
        settings,
        tenant_id=account.tenant_id,
        message_ids=[r.id for r in hard],
        permanent=True,
        nylas=None,
    )
    n_soft = await delete_messages(
        db,
        settings,
        tenant_id=account.tenant_id,
        message_ids=[r.id for r in soft],
        permanent=False,
        nylas=None,
    )

    assert (n_hard, n_soft) == (2, 2)
    on_server = await _server_uidls(dovecot, mailbox_user)
    assert sorted(on_server) == sorted(r.provider_id for r in rows[2:])
    live = {r.provider_id for r in await _rows(db, account) if r.deleted_at is None}
    assert live == {r.provider_id for r in rows[4:]}

    # The soft-deleted ones stay on the server: the next sync neither fetches nor revives them.
    result, client = await _sync(db, settings, account)
    assert client.retrieved == 0 and (result.new, result.deleted) == (0, 0)
    assert {r.provider_id for r in await _rows(db, account) if r.deleted_at is None} == live


async def test_a_message_over_the_cap_is_stored_as_its_header_only(
    db: Any, settings: Any, dovecot: Dovecot, mailbox_user: str
) -> None:
    small = _corpus(2)
    big = _with_attachment().replace(b"See the file.", b"See the file." + b" padding" * 4000)
    for raw in [*small, big]:
        dovecot.deliver(mailbox_user, raw)
    account = await create_pop3_account(db, settings, dovecot, mailbox_user)

    result, client = await _sync(db, settings, account, max_message_bytes=20_000)

    assert result.new == 3 and client.retrieved == 2
    row = next(r for r in await _rows(db, account) if r.subject == "report attached")
    assert any("over the 20000-byte cap" in w for w in row.parse_warnings)
    assert row.size is not None and row.size > 20_000
    assert "padding" not in (row.text or "") and not row.has_attachments


async def test_login_uses_apop_on_plain_and_user_pass_over_tls(
    dovecot: Dovecot, mailbox_user: str
) -> None:
    for security, method in (("none", "APOP"), ("tls", "USER"), ("starttls", "USER")):
        config = Pop3Config.from_credentials(
            dovecot.pop3_credentials(mailbox_user, security=security)
        )
        async with Pop3Client(config) as client:
            assert client.login_method == method
            assert await client.uidl() == []
    log = (dovecot.base / "dovecot.log").read_text()
    assert f"user=<{mailbox_user}>, method=APOP" in log
    assert re.search(rf"user=<{re.escape(mailbox_user)}>, method=PLAIN.*TLS", log)


@pytest.mark.parametrize("security", ["none", "tls"])
async def test_a_wrong_password_is_bad_credentials_without_the_servers_words(
    dovecot: Dovecot, mailbox_user: str, security: str
) -> None:
    creds = dovecot.pop3_credentials(mailbox_user, security=security)
    creds["pop3"]["password"] = PASSWORD + "-wrong"  # type: ignore[index]
    with pytest.raises(BadCredentials) as info:
        await Pop3Client(Pop3Config.from_credentials(creds)).connect()
    text = str(info.value)
    assert text == "The POP3 server refused the username or password."
    assert GREETING not in text and "Authentication failed" not in text


async def test_a_pop3_message_cannot_be_moved_to_another_folder(
    db: Any, settings: Any, dovecot: Dovecot, mailbox_user: str
) -> None:
    from services.classify.rules import move_message

    dovecot.deliver(mailbox_user, _with_attachment())
    account = await create_pop3_account(db, settings, dovecot, mailbox_user)
    await _sync(db, settings, account)
    [row] = await _rows(db, account)
    junk = Folder(tenant_id=account.tenant_id, account_id=account.id, name="Junk", role="junk")

    with pytest.raises(ValidationFailed, match="one folder, INBOX"):
        await move_message(
            db, settings=settings, nylas=None, account=account, message=row, target=junk
        )
    assert await _server_uidls(dovecot, mailbox_user) == [row.provider_id]


def test_unstuffing_removes_exactly_one_leading_dot() -> None:
    assert unstuff(b"..a\r\nb\r\n...c\r\n") == b".a\r\nb\r\n..c\r\n"
    assert unstuff(b"x\r\n..\r\n") == b"x\r\n.\r\n"
