"""No task keeps a database connection idle in transaction while it talks to a mail server.

The worker pool has two connections per process; a transaction left open across an IMAP
sync or an SMTP conversation holds one of them (and its snapshot and locks) for as long as
the server takes. Each test slows the server down (a proxy in front of Dovecot or aiosmtpd
that holds every answer back, or a slow fake Nylas), runs the task through the real Celery
worker, and samples pg_stat_activity of the test database the whole time: no backend may
stay `idle in transaction` for anything near the length of the conversation.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa

from database.models import Event, EventSource, EventStatus, Folder, Message, Rule
from database.repositories.events import rows as events_repo
from tests.fakes.nylas_server import make_message
from tests.helpers import wait_for
from tests.imap_fixtures import Dovecot
from tests.imap_support import append_corpus
from tests.smtp_fixtures import create_send_event, create_smtp_account

pytestmark = pytest.mark.usefixtures("worker")

# Every answer of a slowed server waits this long, so a conversation lasts seconds.
SERVER_DELAY_S = 0.4
# The longest a short transaction may sit idle between its statements on a busy test host.
# A transaction held across a conversation sits idle for the whole of it (seconds).
IDLE_LIMIT_S = 1.0
# The slowed conversations must be clearly longer than that, or the test could not fail.
MIN_CONVERSATION_S = 2.5


class SlowProxy:
    """A TCP proxy to a mail server that delays each chunk the server sends by `delay`."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port = target_port
        self.delay = delay
        self.port = 0
        self.busy_s = 0.0  # summed duration of the connections it carried
        self._server: asyncio.Server | None = None

    async def start(self) -> SlowProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        started = time.monotonic()
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, delay: float) -> None:
            try:
                while data := await src.read(65536):
                    if delay:
                        await asyncio.sleep(delay)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(
            pipe(reader, up_writer, 0.0),
            pipe(up_reader, writer, self.delay),
            return_exceptions=True,
        )
        self.busy_s += time.monotonic() - started


@dataclass
class Watch:
    """The longest `idle in transaction` seen on the test database, and by which statement."""

    longest_s: float = 0.0
    worst: dict[str, Any] = field(default_factory=dict)
    samples: int = 0


@contextlib.asynccontextmanager
async def idle_transactions(settings: Any) -> AsyncIterator[Watch]:
    """Sample pg_stat_activity every 50 ms until the block ends."""
    dsn = settings.database_url.replace("postgresql+asyncpg", "postgresql")
    conn = await asyncpg.connect(dsn)
    watch = Watch()
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            rows = await conn.fetch(
                "SELECT pid, EXTRACT(EPOCH FROM now() - state_change)::float AS idle_s, query "
                "FROM pg_stat_activity WHERE datname = current_database() "
                "AND state = 'idle in transaction' AND pid <> pg_backend_pid()"
            )
            watch.samples += 1
            for row in rows:
                if row["idle_s"] > watch.longest_s:
                    watch.longest_s = row["idle_s"]
                    watch.worst = dict(row)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)

    sampler = asyncio.create_task(sample())
    try:
        yield watch
    finally:
        stop.set()
        await sampler
        await conn.close()


async def _queue(
    db: Any,
    publisher: Any,
    *,
    task_name: str,
    kwargs: dict[str, Any],
    tenant_id: uuid.UUID,
    account_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """What the API does: insert the event, commit, publish by task name."""
    from worker.dispatch import publish

    event_id = uuid.uuid4()
    async with db.transaction() as s:
        await events_repo.insert_once(
            s,
            event_id=event_id,
            source=EventSource.api,
            type=task_name,
            external_id=None,
            task_name=task_name,
            task_id=str(event_id),
            payload={"kwargs": kwargs},
            stale_after_s=60,
            task_kwargs=kwargs,
            tenant_id=tenant_id,
            account_id=account_id,
        )
    assert publish(
        publisher, task_name=task_name, event_id=event_id, task_id=str(event_id), kwargs=kwargs
    )
    return event_id


async def _finished(db: Any, event_id: uuid.UUID, *, timeout: float = 90.0) -> Event:
    async def check() -> Any:
        async with db.transaction() as s:
            event = await events_repo.get(s, event_id)
        return event if event is not None and event.status in EventStatus.finished() else None

    return await wait_for(check, timeout=timeout, message=f"event {event_id} to finish")


@pytest.fixture(scope="module")
def publisher(settings: Any) -> Any:
    from worker.app import make_celery

    return make_celery(settings, publisher_only=True)


@pytest.fixture
async def slow() -> AsyncIterator[Any]:
    proxies: list[SlowProxy] = []

    async def start(port: int, delay: float = SERVER_DELAY_S) -> SlowProxy:
        proxy = await SlowProxy(port, delay).start()
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        await proxy.stop()


def _ids(account: Any) -> dict[str, str]:
    return {
        "account_id": str(account.id),
        "tenant_id": str(account.tenant_id),
        "user_id": str(account.user_id),
    }


def _assert_no_long_idle(watch: Watch, conversation_s: float) -> None:
    assert watch.samples > 10
    assert conversation_s >= MIN_CONVERSATION_S, f"the conversation took {conversation_s:.2f}s"
    assert watch.longest_s < IDLE_LIMIT_S, (
        f"a connection sat idle in transaction for {watch.longest_s:.2f}s during a "
        f"{conversation_s:.2f}s mail-server conversation: {watch.worst}"
    )


async def test_imap_sync_rules_move_and_delete_leave_no_transaction_open_while_the_server_answers(
    db: Any, settings: Any, publisher: Any, dovecot: Dovecot, mailbox_user: str, slow: Any
) -> None:
    ruled = (
        b"From: Ann <ann@rules.example>\r\nSubject: for the rule\r\nMessage-ID: <r@x>\r\n\r\nhi\r\n"
    )
    await append_corpus(
        dovecot, mailbox_user, {"INBOX": ("easy-ham-1", 11)}, extra={"INBOX": [ruled]}
    )
    proxy = await slow(dovecot.port)
    imap = {**dovecot.credentials(mailbox_user)["imap"], "port": proxy.port}  # type: ignore[dict-item]
    account = await create_smtp_account(
        db, settings, smtp={"host": "127.0.0.1", "port": 1}, imap=imap, email=mailbox_user
    )
    async with db.transaction() as s:  # the sync's classify -> apply_rules chain moves it
        s.add(
            Rule(
                tenant_id=account.tenant_id,
                account_id=account.id,
                name="to junk",
                condition={"from_domain": "rules.example"},
                action={"type": "move", "folder_role": "junk"},
            )
        )

    async with idle_transactions(settings) as watch:
        sync_id = await _queue(
            db,
            publisher,
            task_name="postroom.mail.sync_account",
            kwargs={**_ids(account), "folder": None, "full": False},
            tenant_id=account.tenant_id,
            account_id=account.id,
        )
        synced = await _finished(db, sync_id)
        assert synced.status == EventStatus.succeeded, synced.last_error
        assert (synced.result or {})["new"] == 12

        async def moved_to_junk() -> Any:
            async with db.transaction() as s:
                stmt = (
                    sa.select(Folder)
                    .join(Message, Message.folder_id == Folder.id)  # type: ignore[arg-type]
                    .where(Message.account_id == account.id)  # type: ignore[arg-type]
                    .where(Message.message_id_header == "<r@x>")  # type: ignore[arg-type]
                )
                folder = (await s.execute(stmt)).scalar_one_or_none()
            return folder is not None and folder.name == "Junk"

        await wait_for(moved_to_junk, timeout=90, message="the rule's IMAP move")
        async with db.transaction() as s:
            stmt = sa.select(Message).where(Message.account_id == account.id)  # type: ignore[arg-type]
            rows = [m.id for m in (await s.execute(stmt)).scalars()]
        delete_id = await _queue(
            db,
            publisher,
            task_name="postroom.mail.delete",
            kwargs={
                "message_ids": [str(r) for r in rows[:3]],
                "tenant_id": str(account.tenant_id),
                "user_id": str(account.user_id),
                "permanent": True,
            },
            tenant_id=account.tenant_id,
        )
        deleted = await _finished(db, delete_id)
        assert deleted.status == EventStatus.succeeded, deleted.last_error
        assert deleted.result == {"status": "success", "deleted_count": 3}

    _assert_no_long_idle(watch, proxy.busy_s)


async def test_smtp_send_with_sent_copy_leaves_no_transaction_open_while_the_server_answers(
    db: Any,
    settings: Any,
    publisher: Any,
    dovecot: Dovecot,
    mailbox_user: str,
    smtp_server: Any,
    slow: Any,
) -> None:
    peer = smtp_server()
    # Slower than the others: PIPELINING takes a message in two round trips, not four.
    smtp_proxy = await slow(peer.port, 2 * SERVER_DELAY_S)
    imap_proxy = await slow(dovecot.port)
    imap = {**dovecot.credentials(mailbox_user)["imap"], "port": imap_proxy.port}  # type: ignore[dict-item]
    account = await create_smtp_account(
        db, settings, smtp={**peer.credential(), "port": smtp_proxy.port}, imap=imap
    )
    event_id, task_id, _ = await create_send_event(
        db, account=account, kwargs={"to": ["bob@example.org"], "subject": "Slow", "body_text": "x"}
    )
    from worker.dispatch import publish

    async with idle_transactions(settings) as watch:
        async with db.transaction() as s:
            event = await events_repo.get(s, event_id)
        assert event is not None
        assert publish(
            publisher,
            task_name="postroom.mail.send",
            event_id=event_id,
            task_id=task_id,
            kwargs=event.task_kwargs,
        )
        sent = await _finished(db, event_id)

    assert sent.status == EventStatus.succeeded, sent.last_error
    assert (sent.result or {})["sent_copy"] == "appended" and len(peer.received) == 1
    _assert_no_long_idle(watch, smtp_proxy.busy_s + imap_proxy.busy_s)


async def test_pop3_sync_leaves_no_transaction_open_while_the_server_answers(
    db: Any, settings: Any, publisher: Any, dovecot: Dovecot, mailbox_user: str, slow: Any
) -> None:
    from database.models import Account, Credential, Provider
    from services.crypto import encrypt_json
    from tests.factories import create_tenant, create_user

    for i in range(12):
        dovecot.deliver(
            mailbox_user, b"Subject: pop %d\r\nMessage-ID: <p%d@x>\r\n\r\nhi\r\n" % (i, i)
        )
    proxy = await slow(dovecot.pop3_port)
    secrets = dovecot.pop3_credentials(mailbox_user)
    secrets["pop3"] = {**secrets["pop3"], "port": proxy.port}  # type: ignore[dict-item]
    tenant = await create_tenant(db)
    owner = await create_user(db, tenant)
    async with db.transaction() as s:
        account = Account(
            tenant_id=tenant.id, user_id=owner.id, provider=Provider.pop3, email=mailbox_user
        )
        s.add(account)
        await s.flush()
        s.add(
            Credential(
                tenant_id=tenant.id,
                account_id=account.id,
                ciphertext=encrypt_json(settings, secrets),
            )
        )

    async with idle_transactions(settings) as watch:
        event_id = await _queue(
            db,
            publisher,
            task_name="postroom.mail.sync_account",
            kwargs={**_ids(account), "folder": None, "full": False},
            tenant_id=tenant.id,
            account_id=account.id,
        )
        event = await _finished(db, event_id)

    assert event.status == EventStatus.succeeded, event.last_error
    _assert_no_long_idle(watch, proxy.busy_s)


async def test_nylas_sync_leaves_no_transaction_open_while_nylas_answers(
    db: Any, settings: Any, publisher: Any, fake_nylas: Any
) -> None:
    from tests.factories import create_nylas_account

    account = await create_nylas_account(db)
    fake_nylas.put_message(account.grant_id, make_message(str(account.grant_id), "m1"))
    # Nylas takes its time over the first list call (and answers 503: the task retries).
    fake_nylas.fail(r"/messages$", 503, times=1, delay=MIN_CONVERSATION_S + 0.5)

    async with idle_transactions(settings) as watch:
        started = time.monotonic()
        event_id = await _queue(
            db,
            publisher,
            task_name="postroom.mail.sync_account",
            kwargs={**_ids(account), "folder": None, "full": False},
            tenant_id=account.tenant_id,
            account_id=account.id,
        )
        event = await _finished(db, event_id)

    assert event.status == EventStatus.succeeded, event.last_error
    assert (event.result or {})["created"] == 1
    _assert_no_long_idle(watch, time.monotonic() - started)


async def test_truncated_webhook_leaves_no_transaction_open_while_nylas_answers(
    db: Any, settings: Any, client: Any, fake_nylas: Any
) -> None:
    from tests.factories import create_nylas_account
    from tests.helpers import notification, post_webhook

    account = await create_nylas_account(db)
    grant = str(account.grant_id)
    fake_nylas.put_message(grant, make_message(grant, "big", body="<p>the whole body</p>"))
    # The fetch of the whole message takes its time (and answers 503: the task retries).
    fake_nylas.fail(r"/messages/big$", 503, times=1, delay=MIN_CONVERSATION_S + 0.5)

    async with idle_transactions(settings) as watch:
        started = time.monotonic()
        answer = await post_webhook(
            client, notification("message.created.truncated", {"id": "big", "grant_id": grant})
        )
        assert answer.status_code == 200, answer.text
        event = await _finished(db, uuid.UUID(answer.json()["event_id"]))

    assert event.status == EventStatus.succeeded, event.last_error
    _assert_no_long_idle(watch, time.monotonic() - started)


async def test_a_tenant_model_refit_leaves_no_transaction_open_while_it_fits(
    db: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refit of a tenant's model (1-15 s of numpy) used to run inside the first verdict's
    transaction after a label, under an advisory lock and, on the batch path, the row locks
    of its events. Now a verdict only reads the stored model, and the refit (its own task,
    published after the label commits) fits with no transaction open. The fit is slowed here
    so that a transaction held across it could not go unseen."""
    from services.classify import mail, tenant
    from services.classify.service import record_feedback, verdict
    from tests.factories import create_nylas_account

    account = await create_nylas_account(db)
    for text in ("zorblax presale opens", "last zorblax seats"):
        async with db.transaction() as s:
            msg = Message(
                tenant_id=account.tenant_id,
                account_id=account.id,
                provider_id=f"m-{uuid.uuid4().hex[:8]}",
                subject="hello",
                text=text,
                from_email="friend@example.org",
                sort_at=sa.func.now(),
            )
            s.add(msg)
        async with db.transaction() as s:
            assert await record_feedback(
                s, tenant_id=account.tenant_id, user_id=None, message_id=msg.id, label="spam"
            )
    real, fitting = tenant.fit_labels, []

    def slow_fit(*args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        time.sleep(MIN_CONVERSATION_S)  # in the refit's thread, off the event loop
        out = real(*args, **kwargs)
        fitting.append(time.monotonic() - started)
        return out

    monkeypatch.setattr(tenant, "fit_labels", slow_fit)
    probe = mail.MailDoc(subject="hello", from_email="friend@example.org", text="zorblax?")
    async with idle_transactions(settings) as watch:
        # The classify step's (and a webhook batch's) verdict: read only, no fit.
        async with db.transaction() as s:
            await verdict(s, tenant_id=account.tenant_id, doc=probe)
        assert fitting == []
        done = await tenant.refit_when_due(db, tenant_id=account.tenant_id)
    assert done.status == "fitted" and len(fitting) == 1
    _assert_no_long_idle(watch, fitting[0])
