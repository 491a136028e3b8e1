"""IMAP sync against a real Dovecot filled with SpamAssassin corpus messages."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa

from database.models import Folder, Message
from services.errors import BadCredentials, ProviderTemporaryError
from services.imap.sync import run_sync
from tests.imap_fixtures import Dovecot
from tests.imap_support import CORPUS_PLAN_BIG, append_corpus, create_imap_account


async def _rows(db: Any, account: Any) -> list[Message]:
    async with db.transaction() as s:
        stmt = sa.select(Message).where(Message.account_id == account.id)
        return list((await s.execute(stmt)).scalars())


async def _folders(db: Any, account: Any) -> dict[str, Folder]:
    async with db.transaction() as s:
        rows = (await s.execute(sa.select(Folder).where(Folder.account_id == account.id))).scalars()
        return {f.name: f for f in rows}


async def _sync(db: Any, settings: Any, account: Any, **kw: Any) -> dict[str, Any]:
    result = await run_sync(db, settings, tenant_id=account.tenant_id, account_id=account.id, **kw)
    return result.as_dict()


async def test_first_sync_stores_every_message_in_batches_without_setting_seen(
    db: Any, settings: Any, dovecot: Dovecot, mailbox_user: str
) -> None:
    counts = await append_corpus(dovecot, mailbox_user, CORPUS_PLAN_BIG)
    account = await create_imap_account(db, settings, dovecot, mailbox_user)
    seen: list[tuple[int, int]] = []

    async def progress(current: int, total: int) -> None:
        seen.append((current, total))

    result = await _sync(db, settings, account, progress=progress)

    assert result == {
        "status": "success",
        "folders": 6,
        "new": sum(counts.values()),
        "updated": 0,
        "deleted": 0,
    }
    rows = await _rows(db, account)
    assert len(rows) == 520
    folders = await _folders(db, account)
    assert {n: f.role for n, f in folders.items()} == {
        "INBOX": "inbox",
        "Sent": "sent",
        "Trash": "trash",
        "Junk": "junk",
        "Drafts": "drafts",
        "Archive": "archive",
    }
    inbox = folders["INBOX"]
    assert inbox.uidvalidity and inbox.uidnext == 301 and inbox.highest_modseq
    by_folder = {n: sum(1 for r in rows if r.folder_id == f.id) for n, f in folders.items()}
    assert by_folder["INBOX"] == 300 and by_folder["Junk"] == 150 and by_folder["Archive"] == 70
    assert all(r.unread and r.subject is not None for r in rows[:50])
    assert sum(1 for r in rows if r.message_id_header) > 500
    assert sum(1 for r in rows if r.text or r.html) >= 515
    # Progress went up in batches and ended at the total.
    assert len(seen) >= 3 and seen[-1][0] == seen[-1][1] == 520
    assert [c for c, _ in seen] == sorted(c for c, _ in seen)
    # BODY.PEEK[]: the mailbox still has every message unseen.
    conn = dovecot.client(mailbox_user)
    conn.select("INBOX", readonly=True)
    typ, data = conn.search(None, "SEEN")
    assert typ == "OK" and data[0] == b""
    conn.logout()


async def test_second_sync_with_no_change_changes_nothing_and_selects_no_folder(
    db: Any, settings: Any, dovecot: Dovecot, mailbox_user: str
) -> None:
    await append_corpus(
        dovecot, mailbox_user, {"INBOX": ("easy-ham-1", 60), "Junk": ("spam-1", 20)}
    )
    account = await create_imap_account(db, settings, dovecot, mailbox_user)
    await _sync(db, settings, account)
    before = {f.name: f.last_synced_at for f in (await _folders(db, account)).values()}
    updated_before = {r.id: r.updated_at for r in await _rows(db, account)}

    loop = asyncio.get_running_loop()
    start = loop.time()
    result = await _sync(db, settings, account)
    elapsed = loop.time() - start

    assert result == {"status": "success", "folders": 6, "new": 0, "updated": 0, "deleted": 0}
    assert {r.id: r.updated_at for r in await _rows(db, account)} == updated_before
    # LIST-STATUS showed every folder unchanged, so none was selected or stamped.
    assert {f.name: f.last_synced_at for f in (await _folders(db, account)).values()} == before
    assert elapsed < 1.0


async def test_flags_changed_and_messages_expunged_by_another_client_are_applied(
    db: Any, settings: Any, dovecot: Dovecot, mailbox_user: str
) -> None:
    await append_corpus(dovecot, mailbox_user, {"INBOX": ("easy-ham-1", 40)})
    account = await create_imap_account(db, settings, dovecot, mailbox_user)
    await _sync(db, settings, account)

    other = dovecot.client(mailbox_user)
    other.select("INBOX")
    other.uid("STORE", "1:5", "+FLAGS", "(\\Seen)")
    other.uid("STORE", "6", "+FLAGS", "(\\Flagged)")
    other.uid("STORE", "30:32", "+FLAGS", "(\\Deleted)")
    other.expunge()
    other.logout()
    await append_corpus(dovecot, mailbox_user, {"INBOX": ("hard-ham-1", 4)})

    result = await _sync(db, settings, account)

    assert result["new"] == 4 and result["updated"] == 6 and result["deleted"] == 3
    rows = {r.imap_uid: r for r in await _rows(db, account)}
    assert all(not rows[u].unread and "\\Seen" in rows[u].flags for u in range(1, 6))
    assert rows[6].starred and rows[6].unread
    assert all(rows[u].deleted_at is not None for u in (30, 31, 32))
    assert sum(1 for r in rows.values() if r.deleted_at is None) == 41


async def test_expunges_without_qresync_are_found_by_uid_search(
    db: Any, settings: Any, dovecot: Dovecot, mailbox_user: str
) -> None:
    from services.imap.client import ImapClient, ImapConfig
    from services.imap.sync import sync_account

    await append_corpus(dovecot, mailbox_user, {"INBOX": ("easy-ham-1", 20)})
    account = await create_imap_account(db, settings, dovecot, mailbox_user)
    await _sync(db, settings, account)
    other = dovecot.client(mailbox_user)
    other.select("INBOX")
    other.uid("STORE", "2,4", "+FLAGS", "(\\Deleted)")
    other.expunge()
    other.logout()

    config = ImapConfig.from_credentials(dovecot.credentials(mailbox_user))
    async with ImapClient(config) as client:
        client.capabilities.discard("QRESYNC")
        result = await sync_account(db, account=account, client=client)

    assert result.deleted == 2
    gone = {r.imap_uid for r in await _rows(db, account) if r.deleted_at is not None}
    assert gone == {2, 4}


async def test_uidvalidity_change_resyncs_the_folder_without_duplicates(
    db: Any, settings: Any, dovecot: Dovecot, mailbox_user: str
) -> None:
    await append_corpus(dovecot, mailbox_user, {"INBOX": ("easy-ham-1", 30)})
    account = await create_imap_account(db, settings, dovecot, mailbox_user)
    await _sync(db, settings, account)
    ids_before = {r.message_id_header: r.id for r in await _rows(db, account)}

    dovecot.set_uidvalidity(mailbox_user, "INBOX", 424242)
    result = await _sync(db, settings, account)

    rows = await _rows(db, account)
    assert result["new"] == 0 and result["updated"] == 30 and result["deleted"] == 0
    assert len(rows) == 30 and all(r.uidvalidity == 424242 for r in rows)
    assert {r.message_id_header: r.id for r in rows} == ids_before
    assert (await _folders(db, account))["INBOX"].uidvalidity == 424242


async def test_malformed_messages_are_stored_with_parse_warnings(
    db: Any, settings: Any, dovecot: Dovecot, mailbox_user: str
) -> None:
    broken = [
        b"Subject: =?x-nonsense?B?SGVsbG8=?=\r\nContent-Type: text/plain; charset=x-nonsense\r\n"
        b"\r\ncaf\xe9 au lait\r\n",
        b"Subject: cut multipart\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
        b"--XX\r\nContent-Type: text/plain\r\n\r\npart one\r\n--XX\r\n"
        b"Content-Type: application/pdf; name=a.pdf\r\nContent-Transfer-Encoding: base64\r\n"
        b"\r\nJVBERi0x!!!not base64",
        b"no header at all, just text\r\nand a NUL \x00 byte\r\n",
        b"Date: Mon, 32 Foo 0102 99:99:99 +9999\r\nFrom: \xff\xfe broken <x@y>\r\n"
        b"Subject: bad date\r\n\r\nbody\r\n",
    ]
    await append_corpus(dovecot, mailbox_user, {}, extra={"INBOX": broken})
    account = await create_imap_account(db, settings, dovecot, mailbox_user)

    result = await _sync(db, settings, account)

    assert result["new"] == 4
    rows = sorted(await _rows(db, account), key=lambda r: r.imap_uid or 0)
    assert all(r.parse_warnings for r in rows), [r.parse_warnings for r in rows]
    assert rows[0].text is not None and "café" in rows[0].text
    assert rows[1].text is not None and "part one" in rows[1].text
    assert rows[2].text is not None and "NUL" in rows[2].text
    assert rows[3].date is None and rows[3].subject == "bad date"


async def test_wrong_password_is_bad_credentials(
    db: Any, settings: Any, dovecot: Dovecot, mailbox_user: str
) -> None:
    from services.imap.client import ImapClient, ImapConfig

    creds = dovecot.credentials(mailbox_user)
    creds["imap"]["password"] = "wrong"  # type: ignore[index]
    with pytest.raises(BadCredentials):
        await ImapClient(ImapConfig.from_credentials(creds)).connect()


async def test_sync_over_tls(db: Any, settings: Any, dovecot: Dovecot, mailbox_user: str) -> None:
    await append_corpus(dovecot, mailbox_user, {"INBOX": ("spam-1", 10)})
    account = await create_imap_account(db, settings, dovecot, mailbox_user, security="tls")
    result = await _sync(db, settings, account)
    assert result["new"] == 10


async def test_server_hanging_up_mid_fetch_is_transient_and_the_next_sync_resumes(
    db: Any, settings: Any, dovecot: Dovecot, mailbox_user: str
) -> None:
    from database.models import Credential
    from services.crypto import encrypt_json
    from tests.imap_fixtures import FaultyProxy

    await append_corpus(dovecot, mailbox_user, {"INBOX": ("easy-ham-1", 300)})
    account = await create_imap_account(db, settings, dovecot, mailbox_user)
    # The second batch's UID FETCH is cut 20 kB into the answer.
    # (UID FETCH #1 asks every message's RFC822.SIZE; #2 and #3 fetch the batches.)
    proxy = await FaultyProxy(dovecot.port, nth=3, after_bytes=20_000).start()
    creds = dovecot.credentials(mailbox_user)
    creds["imap"]["port"] = proxy.port  # type: ignore[index]
    async with db.transaction() as s:
        await s.execute(
            sa.update(Credential)
            .where(Credential.account_id == account.id)
            .values(  # type: ignore[arg-type]
                ciphertext=encrypt_json(settings, creds)
            )
        )
    try:
        with pytest.raises(ProviderTemporaryError, match="closed the connection during UID FETCH"):
            await _sync(db, settings, account)
        assert len(await _rows(db, account)) == 250  # the first batch is kept
        assert (await _folders(db, account))["INBOX"].uidnext == 251

        proxy.armed = False
        result = await _sync(db, settings, account)
    finally:
        await proxy.stop()

    assert result["new"] == 50
    rows = await _rows(db, account)
    assert len(rows) == 300 and len({r.provider_id for r in rows}) == 300


async def test_server_going_silent_mid_command_times_out_as_transient(
    dovecot: Dovecot, mailbox_user: str
) -> None:
    from services.imap.client import ImapClient, ImapConfig
    from tests.imap_fixtures import FaultyProxy

    await append_corpus(dovecot, mailbox_user, {"INBOX": ("spam-1", 5)})
    proxy = await FaultyProxy(dovecot.port, trigger=b"SELECT", mode="stall").start()
    creds = dovecot.credentials(mailbox_user)
    creds["imap"]["port"] = proxy.port  # type: ignore[index]
    try:
        client = await ImapClient(ImapConfig.from_credentials(creds, timeout=0.5)).connect()
        with pytest.raises(ProviderTemporaryError, match=r"did not answer .* during SELECT"):
            await client.select("INBOX")
    finally:
        await proxy.stop()


def _many_parts(subject: str, parts: int) -> bytes:
    """A multipart/mixed message of `parts` tiny attachments (about 30 bytes each)."""
    body = b"".join(b"--b\r\nContent-Type: a/b\r\n\r\n%d\r\n" % i for i in range(parts))
    return (
        b"Subject: %s\r\nMessage-ID: <%s@x>\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        % (subject.encode(), subject.encode())
        + body
        + b"--b--\r\n"
    )


async def test_bad_messages_are_flagged_and_the_rest_of_the_folder_syncs_and_advances(
    db: Any, settings: Any, dovecot: Dovecot, mailbox_user: str
) -> None:
    from database.models import Attachment

    cap = 1_000_000
    huge = b"Subject: huge\r\nMessage-ID: <huge@x>\r\n\r\n" + b"0123456789abcde\r\n" * 150_000
    nul = (
        b"Subject: nul\x00here\r\nX-Odd: a\x00b\r\nMessage-ID: <nul@x>\r\n"
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
        b'Content-Type: application/x\x00y; name="f\x00.bin"\r\nContent-ID: <c\x00d>\r\n\r\n'
        b"data\r\n--b--\r\n"
    )
    # Five messages of 900 parts share one batch: 4,500 attachment rows, 45,000 parameters.
    wide = [_many_parts(f"wide{i}", 900) for i in range(5)]
    extra = [_many_parts("exploded", 10_000), huge, nul, *wide]
    counts = await append_corpus(
        dovecot, mailbox_user, {"INBOX": ("easy-ham-1", 30)}, extra={"INBOX": extra}
    )
    account = await create_imap_account(db, settings, dovecot, mailbox_user)
    small_cap = settings.model_copy(update={"max_message_bytes": cap})
    assert len(huge) > cap > len(extra[0])

    first = await _sync(db, small_cap, account)
    second = await _sync(db, small_cap, account)

    assert first["new"] == counts["INBOX"] == 38
    assert second == {"status": "success", "folders": 6, "new": 0, "updated": 0, "deleted": 0}
    stored = await _rows(db, account)
    rows = {r.subject: r for r in stored if r.imap_uid and r.imap_uid > 30}
    normal = [r for r in stored if r.imap_uid is not None and r.imap_uid <= 30]
    assert len(stored) == 38 and len(normal) == 30
    assert all(r.problem is None and not r.too_large for r in normal)
    assert sum(1 for r in normal if r.text or r.html) >= 29
    big = rows["huge"]
    assert big.too_large and big.text is None and big.size is not None and big.size > cap
    assert big.problem is not None and "cap" in big.problem
    exploded = rows["exploded"]
    assert exploded.problem is not None and "10000 attachments" in exploded.problem
    # Dovecot stores a NUL as 0x80 (the scripted server in tests/hostile sends real NULs).
    [nul_row] = [r for r in rows.values() if r.imap_uid == 33]
    assert nul_row.problem is None and nul_row.subject and nul_row.subject.startswith("nul")
    async with db.transaction() as s:
        per_message = dict(
            (
                await s.execute(
                    sa.select(Attachment.message_id, sa.func.count())
                    .where(Attachment.tenant_id == account.tenant_id)
                    .group_by(Attachment.message_id)
                )
            ).all()
        )
    assert per_message[exploded.id] == 1000
    assert all(per_message[rows[f"wide{i}"].id] == 900 for i in range(5))
    inbox = (await _folders(db, account))["INBOX"]
    assert inbox.uidnext == 39 and inbox.highest_modseq
