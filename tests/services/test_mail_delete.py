"""Deleting messages: the mailbox is checked afterwards with a separate IMAP client."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from database.models import Folder, Message
from services.classify.rules import move_message
from services.errors import PermissionDenied
from services.imap.sync import run_sync
from services.messages.delete import delete_messages
from tests.factories import create_nylas_account
from tests.fakes.nylas_server import make_message
from tests.imap_fixtures import Dovecot
from tests.imap_support import append_corpus, create_imap_account


async def _synced(db: Any, settings: Any, dovecot: Dovecot, user: str) -> tuple[Any, list[Message]]:
    await append_corpus(dovecot, user, {"INBOX": ("easy-ham-1", 12), "Junk": ("spam-1", 4)})
    account = await create_imap_account(db, settings, dovecot, user)
    await run_sync(db, settings, tenant_id=account.tenant_id, account_id=account.id)
    async with db.transaction() as s:
        stmt = sa.select(Message).where(Message.account_id == account.id).order_by(Message.imap_uid)
        return account, list((await s.execute(stmt)).scalars())


def _uids(dovecot: Dovecot, user: str, mailbox: str) -> set[int]:
    conn = dovecot.client(user)
    conn.select(mailbox, readonly=True)
    _, data = conn.uid("SEARCH", "ALL")
    conn.logout()
    return {int(x) for x in data[0].split()}


def _subjects(dovecot: Dovecot, user: str, mailbox: str) -> list[bytes]:
    conn = dovecot.client(user)
    conn.select(mailbox, readonly=True)
    _, data = conn.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    conn.logout()
    return [d[1].strip() for d in data if isinstance(d, tuple)]


async def _deleted_rows(db: Any, ids: list[Any]) -> int:
    async with db.transaction() as s:
        stmt = (
            sa.select(sa.func.count())
            .select_from(Message)
            .where(Message.id.in_(ids), Message.deleted_at.is_not(None))
        )  # type: ignore[attr-defined]
        return int((await s.execute(stmt)).scalar_one())


async def test_soft_delete_moves_to_trash_with_one_command_per_folder(
    db: Any, settings: Any, dovecot: Dovecot, mailbox_user: str
) -> None:
    account, rows = await _synced(db, settings, dovecot, mailbox_user)
    inbox = [r for r in rows if r.labels == ["INBOX"]][:3]
    junk = [r for r in rows if r.labels == ["Junk"]][:2]
    targets = inbox + junk
    ids = [r.id for r in targets]

    count = await delete_messages(
        db, settings, tenant_id=account.tenant_id, message_ids=ids, permanent=False, nylas=None
    )

    assert count == 5 and await _deleted_rows(db, ids) == 5
    assert _uids(dovecot, mailbox_user, "INBOX") == set(range(1, 13)) - {r.imap_uid for r in inbox}
    assert len(_uids(dovecot, mailbox_user, "Junk")) == 2
    trash_ids = {
        s.decode().split(":", 1)[1].strip() for s in _subjects(dovecot, mailbox_user, "Trash")
    }
    assert trash_ids == {r.message_id_header for r in targets}


async def test_permanent_delete_expunges_and_leaves_no_copy(
    db: Any, settings: Any, dovecot: Dovecot, mailbox_user: str
) -> None:
    account, rows = await _synced(db, settings, dovecot, mailbox_user)
    targets = [r for r in rows if r.labels == ["INBOX"]][5:9]

    count = await delete_messages(
        db,
        settings,
        tenant_id=account.tenant_id,
        message_ids=[r.id for r in targets],
        permanent=True,
        nylas=None,
    )

    assert count == 4
    assert _uids(dovecot, mailbox_user, "INBOX") == set(range(1, 13)) - {6, 7, 8, 9}
    assert _uids(dovecot, mailbox_user, "Trash") == set()
    # A later sync agrees with the mailbox and does not count them again.
    result = await run_sync(db, settings, tenant_id=account.tenant_id, account_id=account.id)
    assert result.deleted == 0 and result.new == 0


async def test_messages_of_another_tenant_are_refused_before_the_server_is_touched(
    db: Any, settings: Any, dovecot: Dovecot, mailbox_user: str
) -> None:
    _, rows = await _synced(db, settings, dovecot, mailbox_user)
    intruder = await create_nylas_account(db)

    with pytest.raises(PermissionDenied):
        await delete_messages(
            db,
            settings,
            tenant_id=intruder.tenant_id,
            message_ids=[rows[0].id],
            permanent=True,
            nylas=None,
        )

    assert _uids(dovecot, mailbox_user, "INBOX") == set(range(1, 13))
    assert await _deleted_rows(db, [rows[0].id]) == 0


async def test_nylas_messages_are_destroyed_through_the_api(
    db: Any, settings: Any, fake_nylas: Any
) -> None:
    from services.nylas.gateway import NylasGateway

    account = await create_nylas_account(db)
    async with db.transaction() as s:
        for i in range(2):
            s.add(
                Message(tenant_id=account.tenant_id, account_id=account.id, provider_id=f"msg-{i}")
            )
    for i in range(2):
        fake_nylas.put_message(account.grant_id, make_message(account.grant_id, f"msg-{i}"))
    gateway = NylasGateway(
        api_key=settings.nylas_api_key.get_secret_value(), api_uri=settings.nylas_api_uri, timeout=5
    )
    async with db.transaction() as s:
        ids = list(
            (
                await s.execute(sa.select(Message.id).where(Message.account_id == account.id))
            ).scalars()
        )
    count = await delete_messages(
        db,
        settings,
        tenant_id=account.tenant_id,
        message_ids=ids,
        permanent=False,
        nylas=gateway,
    )

    assert count == 2
    assert len(fake_nylas.requests_to(r"/messages/msg-\d")) == 2
    assert all(
        fake_nylas.state.messages[account.grant_id][f"msg-{i}"]["folders"] == ["TRASH"]
        for i in range(2)
    )


async def test_without_move_the_delete_copies_flags_and_expunges_only_those_uids(
    db: Any, settings: Any, dovecot: Dovecot, mailbox_user: str
) -> None:
    from database.repositories.folders import imap_state
    from services.imap.client import ImapClient, ImapConfig
    from services.messages.delete import _delete_in_folder

    account, rows = await _synced(db, settings, dovecot, mailbox_user)
    other = dovecot.client(mailbox_user)  # someone else's \Deleted mark must survive
    other.select("INBOX")
    other.uid("STORE", "12", "+FLAGS", "(\\Deleted)")
    other.logout()
    async with db.transaction() as s:
        folders = {
            f.name: f
            for f in await imap_state.folders_of(
                s, tenant_id=account.tenant_id, account_id=account.id
            )
        }
    targets = [r for r in rows if r.labels == ["INBOX"]][:2]

    config = ImapConfig.from_credentials(dovecot.credentials(mailbox_user))
    async with ImapClient(config) as client:
        client.capabilities.discard("MOVE")
        done = await _delete_in_folder(
            client, folders["INBOX"], targets, folders["Trash"], permanent=False
        )

    assert done == [r.id for r in targets]
    assert _uids(dovecot, mailbox_user, "INBOX") == set(range(3, 13))
    assert len(_uids(dovecot, mailbox_user, "Trash")) == 2


async def test_a_message_moved_by_a_rule_is_deleted_by_its_new_uid_and_no_other(
    db: Any, settings: Any, dovecot: Dovecot, mailbox_user: str
) -> None:
    """After a move the row holds the UID the target folder gave it (UIDPLUS COPYUID). It used
    to keep its INBOX UID: a delete then missed it or, where both folders shared a
    UIDVALIDITY, expunged whichever Junk message had that number."""
    account, rows = await _synced(db, settings, dovecot, mailbox_user)
    moved = next(r for r in rows if r.labels == ["INBOX"] and r.imap_uid == 3)
    async with db.transaction() as s:
        junk = (
            await s.execute(
                sa.select(Folder).where(Folder.account_id == account.id, Folder.role == "junk")
            )
        ).scalar_one()
    assert await move_message(
        db, settings=settings, nylas=None, account=account, message=moved, target=junk
    )

    async with db.transaction() as s:
        row = await s.get(Message, moved.id)
    assert row is not None
    assert (row.folder_id, row.imap_uid, row.uidvalidity) == (junk.id, 5, junk.uidvalidity)
    assert row.provider_id == f"Junk:{junk.uidvalidity}:5"
    # The Junk folder's next sync finds the row it already has: no second copy.
    result = await run_sync(db, settings, tenant_id=account.tenant_id, account_id=account.id)
    assert result.new == 0

    count = await delete_messages(
        db,
        settings,
        tenant_id=account.tenant_id,
        message_ids=[moved.id],
        permanent=True,
        nylas=None,
    )

    assert count == 1
    assert _uids(dovecot, mailbox_user, "Junk") == {1, 2, 3, 4}
    assert _uids(dovecot, mailbox_user, "INBOX") == set(range(1, 13)) - {3}
    junk_ids = {
        s.decode().split(":", 1)[1].strip() for s in _subjects(dovecot, mailbox_user, "Junk")
    }
    assert moved.message_id_header not in junk_ids and len(junk_ids) == 4
