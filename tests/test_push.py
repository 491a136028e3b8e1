"""IMAP push (issue 14): the real listener process in IDLE against Dovecot, the real worker.

A message delivered into INBOX (written into the maildir like an MDA does) is listed by the
API within 10 s while `sync_interval_s` is an hour; listeners share accounts through leases
and take over a killed one's; a burst of deliveries is coalesced into a few syncs.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
import uuid
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from database.models import Account, Credential, Event, EventSource, EventStatus, Provider
from database.repositories.accounts import push_leases
from services.crypto import encrypt_json
from tests.api.keys import Caller, make_caller
from tests.helpers import ENV, wait_for
from tests.imap_fixtures import Dovecot, add_user
from tests.peers import Process

# A listener watches every active IMAP account of every tenant (and other tests' accounts point
# at the session's Dovecot with good passwords): each test here needs its accounts to be the only
# ones.
pytestmark = pytest.mark.usefixtures("empty_database")

# Short intervals so every mechanism runs within a test; the policy is the one production uses.
PUSH_ENV = {
    "POSTROOM_PUSH_LEASE_S": "3",
    "POSTROOM_PUSH_IDLE_RENEW_S": "2",
    "POSTROOM_PUSH_COALESCE_S": "2",
    "POSTROOM_PUSH_BACKOFF_BASE_S": "0.2",
    "POSTROOM_PUSH_BACKOFF_CAP_S": "2",
    "POSTROOM_LOG_JSON": "true",
}


def listener(name: str, **extra: str) -> Process:
    env = {**ENV, **PUSH_ENV, **extra}
    return Process(name, [sys.executable, "-m", "worker.listener"], env).start()


def log_events(proc: Process, event: str) -> list[dict[str, Any]]:
    out = []
    for line in proc.log().splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            entry = json.loads(line)
            if entry.get("event") == event:
                out.append(entry)
    return out


def idling(proc: Process) -> set[str]:
    return {e["account_id"] for e in log_events(proc, "push_idling")}


async def push_account(
    db: Any,
    settings: Any,
    server: Dovecot,
    caller: Caller,
    user: str,
    *,
    password: str | None = None,
) -> uuid.UUID:
    """An IMAP account synced hourly only: anything seen sooner came by push."""
    creds = server.credentials(user)
    if password is not None:
        creds["imap"] = {**creds["imap"], "password": password}  # type: ignore[dict-item]
    async with db.transaction() as s:
        account = Account(
            tenant_id=caller.tenant_id,
            user_id=caller.user_id,
            provider=Provider.imap,
            email=user,
            sync_interval_s=3600,
        )
        s.add(account)
        await s.flush()
        s.add(
            Credential(
                tenant_id=caller.tenant_id,
                account_id=account.id,
                ciphertext=encrypt_json(settings, creds),
            )
        )
    return account.id


def mail(subject: str) -> bytes:
    return (
        f"From: Pat <pat@example.org>\r\nTo: box@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@example.org>\r\n"
        "Date: Thu, 26 Nov 2026 12:00:00 +0000\r\n\r\nHello.\r\n"
    ).encode()


async def listed(
    client: httpx.AsyncClient, caller: Caller, account_id: uuid.UUID, folder: str | None = None
) -> set[str]:
    params = {"account_id": str(account_id), "limit": 200}
    if folder is not None:
        params["folder"] = folder
    r = await client.get("/v1/messages", params=params, headers=caller.headers)
    assert r.status_code == 200, r.text
    return {m["subject"] for m in r.json()["data"]}


async def push_events(db: Any, account_id: uuid.UUID) -> list[Event]:
    async with db.transaction() as s:
        stmt = sa.select(Event).where(
            Event.account_id == account_id,  # type: ignore[arg-type]
            Event.source == EventSource.push,  # type: ignore[arg-type]
        )
        return list((await s.execute(stmt)).scalars())


async def settled(db: Any, account_id: uuid.UUID) -> bool:
    """The listener's sync-on-connect ran: at least one push event, all finished."""
    events = await push_events(db, account_id)
    return bool(events) and all(e.status in EventStatus.finished() for e in events)


async def quiet(db: Any, account_id: uuid.UUID, *, for_s: float = 3.0) -> int:
    """Wait until no push sync has been queued for `for_s` (over a coalescing window) and all
    have finished: the first sync creates the auto folders, whose NOTIFY news queue syncs
    too. -> how many push events there are."""
    count, since = -1, time.monotonic()
    deadline = since + 60
    while time.monotonic() < deadline:
        events = await push_events(db, account_id)
        if len(events) != count:
            count, since = len(events), time.monotonic()
        elif time.monotonic() - since >= for_s and await settled(db, account_id):
            return count
        await asyncio.sleep(0.2)
    raise AssertionError("push syncs did not settle within 60 s")


async def holders(db: Any) -> dict[uuid.UUID, str]:
    async with db.transaction() as s:
        return await push_leases.holders(s)


async def test_delivered_mail_is_listed_within_10s(
    db: Any, settings: Any, worker: Any, client: httpx.AsyncClient, dovecot: Dovecot
) -> None:
    caller = await make_caller(db)
    user = add_user(dovecot)
    account_id = await push_account(db, settings, dovecot, caller, user)
    proc = listener("watch")
    try:
        await wait_for(lambda: _async(str(account_id) in idling(proc)), timeout=20, message="IDLE")
        await wait_for(lambda: settled(db, account_id), timeout=30, message="first sync")
        # Past the IDLE renewal interval: the re-issued IDLE is the one that must notice.
        time.sleep(3)
        subject = f"pushed {uuid.uuid4().hex[:8]}"
        started = time.monotonic()
        dovecot.deliver(user, mail(subject))
        await wait_for(
            lambda: _contains(listed(client, caller, account_id), subject),
            timeout=10,
            interval=0.2,
            message="the delivered message in GET /v1/messages",
        )
        elapsed = time.monotonic() - started
        assert elapsed < 10
        assert any(
            e.task_kwargs.get("folder") == "INBOX" for e in await push_events(db, account_id)
        )
        # The tenant sees the push syncs among its events.
        r = await client.get("/v1/events", params={"source": "push"}, headers=caller.headers)
        assert r.status_code == 200, r.text
        shown = r.json()["data"]
        assert len(shown) >= 2 and {e["source"] for e in shown} == {"push"}
    finally:
        proc.stop(signal.SIGTERM)
    # A clean stop gives the lease back at once and logs ids only.
    stopped = log_events(proc, "push_listener_stopped")
    assert stopped and stopped[0]["released"] == 1
    assert await holders(db) == {}
    assert imap_support_password_absent(proc)


async def test_notify_pushes_mail_in_other_folders(
    db: Any, settings: Any, worker: Any, client: httpx.AsyncClient, dovecot: Dovecot
) -> None:
    """Dovecot offers NOTIFY: mail APPENDed to Archive by another client is synced too."""
    caller = await make_caller(db)
    user = add_user(dovecot)
    account_id = await push_account(db, settings, dovecot, caller, user)
    proc = listener("watch-notify")
    try:
        await wait_for(lambda: _async(str(account_id) in idling(proc)), timeout=20, message="IDLE")
        assert [e["notify"] for e in log_events(proc, "push_idling")] == [True]
        await wait_for(lambda: settled(db, account_id), timeout=30, message="first sync")
        subject = f"archived {uuid.uuid4().hex[:8]}"
        other = dovecot.client(user)
        try:
            assert other.append("Archive", None, None, mail(subject))[0] == "OK"
        finally:
            other.logout()
        await wait_for(
            lambda: _contains(listed(client, caller, account_id, "Archive"), subject),
            timeout=10,
            interval=0.2,
            message="the Archive message in GET /v1/messages?folder=Archive",
        )
        # Synced by push: as Archive, or by the account's "list folders" sync (folder None),
        # which takes Dovecot's news of the folders it creates at the first LIST (more than
        # a few unknown names at once: services/imap/push.py).
        folders = {e.task_kwargs.get("folder") for e in await push_events(db, account_id)}
        assert folders & {"Archive", None}, folders
    finally:
        proc.stop(signal.SIGTERM)


async def test_burst_of_20_is_coalesced_and_complete(
    db: Any, settings: Any, worker: Any, client: httpx.AsyncClient, dovecot: Dovecot
) -> None:
    caller = await make_caller(db)
    user = add_user(dovecot)
    account_id = await push_account(db, settings, dovecot, caller, user)
    proc = listener("watch-burst")
    try:
        await wait_for(lambda: _async(str(account_id) in idling(proc)), timeout=20, message="IDLE")
        before = await quiet(db, account_id)
        subjects = {f"burst {i} {uuid.uuid4().hex[:6]}" for i in range(20)}
        for subject in subjects:
            dovecot.deliver(user, mail(subject))
        await wait_for(
            lambda: _superset(listed(client, caller, account_id), subjects),
            timeout=20,
            interval=0.3,
            message="all 20 messages listed",
        )
        syncs = len(await push_events(db, account_id)) - before
        # 20 changes, a 2 s window: a leading sync and a trailing one (a third if the
        # deliveries straddled two windows).
        assert 1 <= syncs <= 3, syncs
    finally:
        proc.stop(signal.SIGTERM)


async def test_two_listeners_share_and_take_over(
    db: Any, settings: Any, worker: Any, client: httpx.AsyncClient, dovecot: Dovecot
) -> None:
    caller = await make_caller(db)
    users = [add_user(dovecot) for _ in range(4)]
    ids = [await push_account(db, settings, dovecot, caller, u) for u in users]
    first = listener("watch-a", POSTROOM_PUSH_CAPACITY="2")
    second: Process | None = None
    try:
        await wait_for(lambda: _async(len(idling(first)) == 2), timeout=20, message="A in IDLE")
        second = listener("watch-b", POSTROOM_PUSH_CAPACITY="4")
        await wait_for(lambda: _async(len(idling(second)) == 2), timeout=20, message="B in IDLE")
        held = await holders(db)
        assert set(held) == set(ids)
        assert sorted(list(held.values()).count(h) for h in set(held.values())) == [2, 2]
        assert idling(first).isdisjoint(idling(second))

        def one_connection_each() -> bool:
            # The syncs each listener queued on connect also log in; wait until they are done.
            counts = dovecot.connections()
            return all(counts.get(u, 0) == 1 for u in users)

        await wait_for(lambda: _async(one_connection_each()), timeout=30, message="1 conn/user")

        lost = {uuid.UUID(a) for a in idling(first)}
        first.stop(signal.SIGKILL)  # no release: the leases must expire
        killed_at = time.monotonic()

        async def all_with_second() -> bool:
            now = await holders(db)
            return set(now) == set(ids) and len(set(now.values())) == 1

        await wait_for(all_with_second, timeout=15, message="B holds every account")
        assert time.monotonic() - killed_at >= 1.0  # not before A's lease ran out
        await wait_for(
            lambda: _async({str(a) for a in lost} <= idling(second)), timeout=15, message="B IDLE"
        )
        await wait_for(lambda: _async(one_connection_each()), timeout=30, message="1 conn/user")

        taken = next(iter(lost))
        user = users[ids.index(taken)]
        subject = f"after takeover {uuid.uuid4().hex[:8]}"
        dovecot.deliver(user, mail(subject))
        await wait_for(
            lambda: _contains(listed(client, caller, taken), subject),
            timeout=10,
            interval=0.2,
            message="mail of a taken-over account",
        )
    finally:
        first.stop(signal.SIGKILL)
        if second is not None:
            second.stop(signal.SIGTERM)


async def test_deleted_or_disabled_accounts_are_let_go(
    db: Any, settings: Any, dovecot: Dovecot
) -> None:
    caller = await make_caller(db)
    users = [add_user(dovecot) for _ in range(2)]
    ids = [await push_account(db, settings, dovecot, caller, u) for u in users]
    proc = listener("watch-drop", POSTROOM_PUSH_SYNC_ON_CONNECT="false")
    try:
        await wait_for(lambda: _async(len(idling(proc)) == 2), timeout=20, message="IDLE")
        async with db.transaction() as s:
            await s.execute(
                sa.update(Account)
                .where(Account.id == ids[0])  # type: ignore[arg-type]
                .values(deleted_at=sa.func.now())
            )
            await s.execute(
                sa.update(Account)
                .where(Account.id == ids[1])  # type: ignore[arg-type]
                .values(status="disabled")
            )
        await wait_for(
            lambda: _async(len(log_events(proc, "push_account_dropped")) == 2),
            timeout=10,
            message="both dropped",
        )
        await wait_for(
            lambda: _async(not any(dovecot.connections().get(u) for u in users)),
            timeout=10,
            message="their connections closed",
        )
        assert await holders(db) == {}
    finally:
        proc.stop(signal.SIGTERM)


async def test_refused_login_waits_for_new_credentials(
    db: Any, settings: Any, dovecot: Dovecot
) -> None:
    caller = await make_caller(db)
    user = add_user(dovecot)
    wrong = "wrong-" + uuid.uuid4().hex
    account_id = await push_account(db, settings, dovecot, caller, user, password=wrong)
    proc = listener("watch-auth")
    try:
        await wait_for(
            lambda: _async(bool(log_events(proc, "push_account_refused"))),
            timeout=20,
            message="the refusal",
        )
        time.sleep(3)  # several backoff periods: a refused login is not retried
        refusals = log_events(proc, "push_account_refused")
        assert len(refusals) == 1
        assert refusals[0]["account_id"] == str(account_id)
        assert refusals[0]["error"] == "BadCredentials"
        assert wrong not in proc.log()
        async with db.transaction() as s:  # what PATCH /v1/accounts does with new settings
            await s.execute(
                sa.update(Credential)
                .where(Credential.account_id == account_id)  # type: ignore[arg-type]
                .values(
                    ciphertext=encrypt_json(settings, dovecot.credentials(user)),
                    updated_at=sa.func.now(),
                )
            )
        await wait_for(
            lambda: _async(str(account_id) in idling(proc)), timeout=20, message="IDLE again"
        )
        # The account itself was not marked: a listener never changes its status.
        async with db.transaction() as s:
            account = await s.get(Account, account_id)
        assert account is not None and account.status == "active"
    finally:
        proc.stop(signal.SIGTERM)


async def test_idle_ends_on_append_from_another_client(dovecot: Dovecot) -> None:
    """ImapClient.idle(): quiet -> 0 after max_s; APPEND elsewhere -> a change, promptly."""

    from services.imap.client import ImapClient, ImapConfig

    user = add_user(dovecot)
    config = ImapConfig.from_credentials(
        dovecot.credentials(user), allowed_private_hosts="127.0.0.0/8"
    )
    async with ImapClient(config) as imap:
        await imap.select("INBOX", readonly=True)
        started = time.monotonic()
        assert await imap.idle(0.5) == 0
        assert 0.4 < time.monotonic() - started < 5

        def append() -> float:
            other = dovecot.client(user)
            try:
                assert other.append("INBOX", None, None, mail("appended"))[0] == "OK"
                return time.monotonic()
            finally:
                other.logout()

        later = asyncio.get_running_loop().run_in_executor(None, append)
        assert await imap.idle(20) >= 1
        ended = time.monotonic()
        # Promptly after the APPEND (measured from its OK: logging in may be slow on a busy box).
        assert ended - await later < 5
        # A long IDLE notices a peer that vanished without a FIN: TCP keepalive is on.
        import socket

        sock = imap._writer.get_extra_info("socket")  # type: ignore[union-attr]
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        # The connection is ready for the next command after DONE.
        info = await imap.select("INBOX", readonly=True)
        assert info.exists == 1


def test_backoff_is_capped_exponential_with_jitter() -> None:
    from services.imap.push import backoff_s

    top = [backoff_s(n, base=1.0, cap=300.0, rand=lambda: 1.0) for n in range(12)]
    assert top[:4] == [1.0, 2.0, 4.0, 8.0] and top[-1] == 300.0
    assert backoff_s(50, base=1.0, cap=300.0, rand=lambda: 0.0) == 0.0
    assert backoff_s(10_000, base=1.0, cap=300.0) <= 300.0


def imap_support_password_absent(proc: Process) -> bool:
    from tests.imap_fixtures import PASSWORD

    return PASSWORD not in proc.log()


async def _async(value: bool) -> bool:
    return value


async def _contains(subjects: Any, subject: str) -> bool:
    return subject in await subjects


async def _superset(subjects: Any, wanted: set[str]) -> bool:
    return wanted <= await subjects
