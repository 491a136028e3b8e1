"""IMAP push: hold IDLE (RFC 2177) on each leased account's INBOX and queue a sync on change.

One listener process (worker/listener.py, `make watch`) runs one `Listener`. Accounts are
leased in PostgreSQL (database/repositories/accounts/push_leases.py), so several listeners
on several hosts share them: each claims up to its capacity, renews every third of the lease,
and takes over accounts whose holder stopped renewing. A change seen in IDLE becomes a
`source = "push"` sync event of that folder, inserted and committed before it is published,
like a webhook.

Each account costs one IMAP connection here; with the sync a change starts, that is the two
connections per account the budget allows (docs/operations.md "Push").

Where the server offers NOTIFY (RFC 5465; Dovecot does), the same connection also hears of
new and expunged mail in every other personal folder (`* STATUS` during IDLE) and queues a
sync of that folder; without it, other folders wait for the periodic sync.

A server cannot flood this (docs/security.md): news about folders postroom does not know gets
a sync per folder only while they are few (3 in one IDLE round, 4 per account per list window);
past that it becomes one "list folders" sync of the account (`folder` None: LIST, then the
folders whose status changed) at most once per POSTROOM_PUSH_LIST_FOLDERS_S, however many
names a server invents; names over 1 KB are dropped; and at most one unfinished push sync per
(account, folder) exists in the database (ux_event_push_unfinished, INSERT ... ON CONFLICT DO
NOTHING).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import redis.asyncio as aioredis
import structlog

from database.engine import Database
from database.models import EventSource
from database.repositories.accounts import access as accounts_repo
from database.repositories.accounts import push_leases
from database.repositories.accounts.push_leases import Leased
from database.repositories.folders import imap_state as folders_repo
from database.task_names import TaskName
from services.accounts.access import imap_config
from services.errors import ProviderPermanentError, ValidationFailed
from services.events.unit_of_work import Publisher, record_event
from services.imap.client import ImapClient, ImapCommandError, ImapConfig
from settings import Settings

log = structlog.get_logger(__name__)

WATCHED_FOLDER = "INBOX"
COALESCE_KEY = "postroom:push:sync:{account_id}:{folder}"
# The coalescing slot of "list folders" syncs (folder None): any folder postroom does not know.
ALL_FOLDERS_SLOT = "\x00list"
# A mailbox name longer than this (UTF-8 bytes) in NOTIFY news is not a folder we sync.
MAX_FOLDER_NAME_BYTES = 1024
# Folders not (yet) in the folder table get a sync of their own while they are few: at most
# this many names in one IDLE round, and this many per account per list window. Past either,
# they are one "list folders" sync (a new folder is real news; a thousand are a flood).
FEW_UNKNOWN_PER_ROUND = 3
UNKNOWN_PER_WINDOW = 4
UNKNOWN_KEY = "postroom:push:unknown:{account_id}"
# INBOX is selected (its changes come as EXISTS/EXPUNGE/FETCH); every other personal folder
# reports new and expunged mail as STATUS. Flag changes elsewhere wait for the periodic sync.
NOTIFY_EVENTS = (
    "(selected (MessageNew MessageExpunge FlagChange)) (personal (MessageNew MessageExpunge))"
)


def backoff_s(
    attempt: int, *, base: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Capped exponential backoff with full jitter: uniform in [0, min(cap, base * 2^n)]."""
    return rand() * min(cap, base * 2 ** min(attempt, 30))


def new_holder() -> str:
    """This listener's name in push_lease: host and pid for people, a nonce for uniqueness."""
    return f"{socket.gethostname()[:120]}:{os.getpid()}:{secrets.token_hex(4)}"


async def queue_sync(
    db: Database,
    publisher: Publisher,
    *,
    account: Leased,
    folder: str | None,
    stale_after_s: float,
) -> uuid.UUID | None:
    """Record a push sync event, commit, then publish it (the outbox covers a failed publish).

    None when a sync of that folder (None: every folder) is still unfinished: the database
    refuses a second one (ux_event_push_unfinished), so nothing is inserted or published.
    """
    event_id = uuid.uuid4()
    kwargs = {
        "account_id": str(account.account_id),
        "tenant_id": str(account.tenant_id),
        "user_id": str(account.user_id),
        "folder": folder,
        "full": False,
    }
    async with db.transaction() as s:
        job = await record_event(
            s,
            task_name=TaskName.sync_account,
            kwargs=kwargs,
            source=EventSource.push,
            type="account.sync",
            stale_after_s=stale_after_s,
            tenant_id=account.tenant_id,
            user_id=account.user_id,
            account_id=account.account_id,
            event_id=event_id,
            task_id=str(event_id),
            any_conflict=True,
        )
    if job is None:
        return None
    await publisher.publish(**job.fields())
    return event_id


# -> False when nothing was queued because a sync of that folder is still unfinished.
QueueSync = Callable[[Leased, str | None], Awaitable[bool]]


class Coalescer:
    """At most one queued sync per account and folder per window, and never a change lost.

    The window is a Redis key (SET NX PX), shared by every listener. A change inside a window
    does not queue at once: one more sync is queued when the window ends, so a burst costs
    a leading and a trailing sync, and the trailing one sees the burst's last message.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        window_s: float,
        queue: QueueSync,
        list_window_s: float | None = None,
    ) -> None:
        self.redis = redis
        self.window_ms = max(int(window_s * 1000), 1)
        # "List folders" syncs (folder None) have a window of their own, usually longer.
        self.list_window_ms = max(int((list_window_s or window_s) * 1000), 1)
        self.queue = queue
        self._trailing: dict[tuple[uuid.UUID, str], asyncio.Task[None]] = {}

    async def changed(self, account: Leased, folder: str | None) -> None:
        """A change in `folder` (None: some folder not known yet, synced by listing them)."""
        name = ALL_FOLDERS_SLOT if folder is None else folder
        slot = (account.account_id, name)
        if slot in self._trailing:
            return  # a sync after the window is already planned: it will see this change
        key = COALESCE_KEY.format(account_id=account.account_id, folder=name)
        window_ms = self.list_window_ms if folder is None else self.window_ms
        try:
            first = await self.redis.set(key, "1", nx=True, px=window_ms)
            wait_ms = 0 if first else await self.redis.pttl(key)
        except Exception as exc:  # Redis away: a sync too many is better than one too few
            log.warning("push_coalesce_unavailable", error=type(exc).__name__)
            first, wait_ms = True, 0
        if first:
            if await self.queue(account, folder):
                return
            # One is still unfinished (maybe running, past this change): try again once the
            # window ends, so the change is not lost; the database keeps it to one row.
            wait_ms = window_ms
        delay = max(int(wait_ms), 1) / 1000
        self._trailing[slot] = asyncio.create_task(self._after(slot, account, folder, delay))

    async def _after(
        self, slot: tuple[uuid.UUID, str], account: Leased, folder: str | None, delay: float
    ) -> None:
        try:
            await asyncio.sleep(delay)
        finally:
            self._trailing.pop(slot, None)
        try:
            await self.changed(account, folder)
        except Exception as exc:  # the database is away: the next change or reconnect syncs
            log.warning(
                "push_queue_failed", account_id=str(account.account_id), error=type(exc).__name__
            )

    def forget(self, account_id: uuid.UUID) -> None:
        """Cancel planned syncs of an account this listener no longer holds."""
        for slot in [s for s in self._trailing if s[0] == account_id]:
            self._trailing.pop(slot).cancel()

    def cancel_all(self) -> None:
        for task in self._trailing.values():
            task.cancel()
        self._trailing.clear()


@dataclass
class Watch:
    account: Leased
    task: asyncio.Task[None]


@dataclass
class Listener:
    """Leases accounts and keeps one IDLE connection per leased account."""

    settings: Settings
    db: Database
    redis: aioredis.Redis
    publisher: Publisher
    holder: str = field(default_factory=new_holder)
    watches: dict[uuid.UUID, Watch] = field(default_factory=dict)
    idling: set[uuid.UUID] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.coalescer = Coalescer(
            self.redis,
            window_s=self.settings.push_coalesce_s,
            queue=self._queue,
            list_window_s=self.settings.push_list_folders_s,
        )
        self._gate = asyncio.Semaphore(max(self.settings.push_connect_concurrency, 1))
        self._renewed_at = 0.0
        # Per account: when its folder names were read, and the names.
        self._known: dict[uuid.UUID, tuple[float, frozenset[str]]] = {}

    # -- leases -----------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Claim, renew and watch until `stop` is set; then close everything and release."""
        s = self.settings
        log.info("push_listener_started", holder=self.holder, capacity=s.push_capacity)
        try:
            while not stop.is_set():
                await self.tick()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), s.push_lease_s / 3)
        finally:
            await self.shutdown()

    async def tick(self) -> None:
        """Renew what we hold, claim more up to capacity, and start/stop watches to match."""
        s = self.settings
        try:
            async with self.db.transaction() as session:
                held = await push_leases.renew(session, holder=self.holder, lease_s=s.push_lease_s)
            async with self.db.transaction() as session:
                held |= await push_leases.claim(
                    session,
                    holder=self.holder,
                    limit=s.push_capacity - len(held),
                    lease_s=s.push_lease_s,
                )
        except Exception as exc:
            log.warning("push_lease_failed", holder=self.holder, error=type(exc).__name__)
            # Past the lease, another listener may own our accounts: stop using them.
            if time.monotonic() - self._renewed_at > s.push_lease_s:
                self.reconcile({})
            return
        self._renewed_at = time.monotonic()
        self.reconcile(held)

    def reconcile(self, held: dict[uuid.UUID, Leased]) -> None:
        for account_id in [a for a in self.watches if a not in held]:
            log.info("push_account_dropped", account_id=str(account_id))
            self._stop_watch(account_id)
        for account_id, account in held.items():
            watch = self.watches.get(account_id)
            if watch is not None and watch.account.version != account.version:
                log.info("push_credentials_changed", account_id=str(account_id))
                self._stop_watch(account_id)
                watch = None
            if watch is None:
                task = asyncio.create_task(self._watch(account))
                self.watches[account_id] = Watch(account, task)

    def _stop_watch(self, account_id: uuid.UUID) -> None:
        watch = self.watches.pop(account_id)
        watch.task.cancel()
        self.coalescer.forget(account_id)
        self.idling.discard(account_id)
        self._known.pop(account_id, None)

    async def shutdown(self) -> None:
        tasks = [w.task for w in self.watches.values()]
        for account_id in list(self.watches):
            self._stop_watch(account_id)
        self.coalescer.cancel_all()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            async with self.db.transaction() as session:
                released = await push_leases.release(session, holder=self.holder)
        except Exception as exc:  # the leases simply expire
            log.warning("push_release_failed", holder=self.holder, error=type(exc).__name__)
            released = 0
        log.info("push_listener_stopped", holder=self.holder, released=released)

    # -- one account ------------------------------------------------------------------------
    async def _queue(self, account: Leased, folder: str | None) -> bool:
        event_id = await queue_sync(
            self.db,
            self.publisher,
            account=account,
            folder=folder,
            stale_after_s=self.settings.outbox_stale_after_s,
        )
        if event_id is None:
            return False
        log.info("push_sync_queued", account_id=str(account.account_id), event_id=str(event_id))
        return True

    async def _known_folders(self, account: Leased, *, refresh: bool = False) -> frozenset[str]:
        """The account's folders as stored (names and server spellings), read at most once per
        coalescing window: a flood of invented names costs no query per name."""
        now = time.monotonic()
        found = self._known.get(account.account_id)
        if found is not None and (not refresh or now - found[0] < self.settings.push_coalesce_s):
            return found[1]
        async with self.db.transaction() as session:
            rows = await folders_repo.folders_of(
                session, tenant_id=account.tenant_id, account_id=account.account_id
            )
        names = frozenset(
            n for f in rows for n in (f.name, f.provider_id) if isinstance(n, str) and n
        )
        self._known[account.account_id] = (now, names)
        return names

    async def _few(self, account: Leased, names: set[str]) -> bool:
        """Whether these unknown folders fit the account's budget of per-folder syncs for
        unknown names in this list window (a Redis counter shared by every listener)."""
        key = UNKNOWN_KEY.format(account_id=account.account_id)
        window_ms = max(int(self.settings.push_list_folders_s * 1000), 1)
        try:
            await self.redis.set(key, 0, nx=True, px=window_ms)
            spent = int(await self.redis.incrby(key, len(names)))
        except Exception as exc:  # Redis away: the one list sync covers them
            log.warning("push_coalesce_unavailable", error=type(exc).__name__)
            return False
        return spent <= UNKNOWN_PER_WINDOW

    async def _news(self, account: Leased, others: set[str], changes: int) -> None:
        """Queue the syncs one IDLE's news call for: known folders each (coalesced), and any
        number of unknown ones as one "list folders" sync."""
        folders: set[str] = {WATCHED_FOLDER} if changes else set()
        unknown: set[str] = set()
        known = await self._known_folders(account)
        for name in others:
            if len(name.encode("utf-8", "surrogatepass")) > MAX_FOLDER_NAME_BYTES:
                continue
            if name.upper() == "INBOX":
                folders.add(WATCHED_FOLDER)
            elif name in known:
                folders.add(name)
            else:
                unknown.add(name)
        if unknown:
            # Maybe created since we last read them (a sync stored them): read once more.
            known = await self._known_folders(account, refresh=True)
            folders |= unknown & known
            unknown -= known
        if unknown and len(unknown) <= FEW_UNKNOWN_PER_ROUND and await self._few(account, unknown):
            folders |= unknown  # a sync of the folder stores it (and its mail) at once
            unknown = set()
        for folder in sorted(folders):
            await self.coalescer.changed(account, folder)
        if unknown:
            await self.coalescer.changed(account, None)

    async def _config(self, account: Leased) -> ImapConfig:
        async with self.db.transaction() as session:
            row = await accounts_repo.get_for_tenant(session, account.tenant_id, account.account_id)
            if row is None:
                raise ValidationFailed("The account is gone.")
            return await imap_config(session, self.settings, row)

    async def _watch(self, account: Leased) -> None:
        """Connect, IDLE, queue syncs; on errors back off and connect again, until cancelled."""
        s = self.settings
        account_id = str(account.account_id)
        attempt = 0
        while True:
            try:
                async with self._gate:
                    client = await ImapClient(await self._config(account)).connect()
                try:
                    await client.select(WATCHED_FOLDER, readonly=True)
                    attempt = 0
                    await self._idle(client, account)
                finally:
                    self.idling.discard(account.account_id)
                    await client.close()
            except (ProviderPermanentError, ValidationFailed) as exc:
                # A refused login stays refused: wait for new credentials (reconcile restarts
                # this watch when they change) or a long while. Nothing is marked on the account.
                log.warning("push_account_refused", account_id=account_id, error=type(exc).__name__)
                await asyncio.sleep(s.push_auth_retry_s)
            except Exception as exc:
                delay = backoff_s(attempt, base=s.push_backoff_base_s, cap=s.push_backoff_cap_s)
                attempt += 1
                log.info(
                    "push_reconnect",
                    account_id=account_id,
                    error=type(exc).__name__,
                    attempt=attempt,
                    delay_s=round(delay, 2),
                )
                await asyncio.sleep(delay)

    async def _idle(self, client: ImapClient, account: Leased) -> None:
        if self.settings.push_sync_on_connect:
            # Mail that came while no one was in IDLE (a restart, a takeover, an outage).
            await self.coalescer.changed(account, WATCHED_FOLDER)
        notify = self.settings.push_notify and client.has("NOTIFY")
        if notify:
            try:
                await client.notify_set(NOTIFY_EVENTS)
            except ImapCommandError:  # offered but refused (e.g. for this namespace)
                notify = False
        self.idling.add(account.account_id)
        log.info("push_idling", account_id=str(account.account_id), notify=notify)
        while True:
            others: set[str] = set()
            changes = await client.idle(self.settings.push_idle_renew_s, others=others)
            await self._news(account, others, changes)
