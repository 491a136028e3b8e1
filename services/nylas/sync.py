"""Pulling a Nylas account's messages through the API: the sync job and the reconcile sweep.

Webhooks are at-least-once but can be lost for good (a destination `failed` for 72 h is never
replayed, NYLAS.md section 4), so `messages.list(received_after=...)` is the backstop. Both
paths upsert exactly like a webhook does, so running them twice changes nothing.

A sync job with a `Budget` lists in parts: it stops after the page that spends it and says
where the next part goes on (`resume`: the next page token, the same received_after and the
first part's start time, which becomes the cursor when the last part ends).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database
from database.models import Account
from database.repositories.accounts import nylas_state as state_repo
from services.errors import PostroomError, ValidationFailed
from services.nylas.notifications import store_message
from services.sync.budget import Budget
from services.tenant_events.emit import TenantEventType, emit_account
from services.tenant_events.payloads import payloads_by_provider_id

log = structlog.get_logger(__name__)

PAGE_SIZE = 200  # the API's maximum
# Look back this far before the last cursor: a message can appear in the API later than its
# received date (provider delays, a grant catching up), and re-reading costs only upserts.
OVERLAP_S = 3600

Progress = Callable[[int, int], Awaitable[None]]


class MessageLister(Protocol):
    async def list_messages(
        self, grant_id: str, *, query: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], str | None]: ...


@dataclass
class SyncCounts:
    fetched: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    pages: int = 0


async def _upsert(
    session: AsyncSession,
    account: Account,
    obj: dict[str, Any],
    version: int,
    before: dict[uuid.UUID, dict[str, Any]],
) -> str:
    saved = await store_message(session, account=account, obj=obj, version=version, before=before)
    if saved is None:  # deleted here, or a newer notification already applied
        return "unchanged"
    return "created" if saved[1] else "updated"


async def sync_nylas_account(
    db: Database,
    *,
    account: Account,
    nylas: MessageLister | None,
    full: bool,
    progress: Progress | None = None,
    budget: Budget | None = None,
    resume: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """List the account's messages (all, or received since the cursor) and upsert each.

    Owns its transactions: each page is fetched with no transaction open, then stored in one
    short transaction, so a slow Nylas never keeps a connection idle in transaction. A sync
    that dies between pages has stored those pages (upserts: a rerun changes nothing) and
    not moved the cursor.

    A part cut by `budget` answers status "continued" with this part's counts and `resume`
    (give it back to the next part); only the last part moves the cursor.
    """
    if nylas is None or not account.grant_id:
        raise ValidationFailed("Nylas is not configured for this account.")
    started = int(time.time())
    after: int | None = None
    cursor = account.sync_cursor
    if not full and cursor and cursor.isdigit():
        after = max(int(cursor) - OVERLAP_S, 1)
    token: str | None = None
    if resume:  # the same listing as the first part's, from the page it had not read
        started, after, token = int(resume["started"]), resume["received_after"], resume["token"]
    query: dict[str, Any] = {"limit": PAGE_SIZE}
    if after is not None:
        query["received_after"] = after
    counts = SyncCounts()
    while True:
        items, token = await nylas.list_messages(
            account.grant_id, query={**query, "page_token": token} if token else query
        )
        counts.pages += 1
        page = [o for o in items if isinstance(o, dict) and isinstance(o.get("id"), str)]
        async with db.transaction() as s:
            # What the page's messages were: a re-read that changes nothing tells nothing
            # (the overlap re-reads the last hour on every sync).
            before = await payloads_by_provider_id(
                s, account.tenant_id, account.id, [o["id"] for o in page]
            )
            # The list is the state at `started`: a webhook stamped later still wins.
            actions = [await _upsert(s, account, obj, started, before) for obj in page]
        for action in actions:  # counted once committed
            setattr(counts, action, getattr(counts, action) + 1)
        counts.fetched += len(page)
        if progress is not None:
            await progress(counts.fetched, counts.fetched + (PAGE_SIZE if token else 0))
        if not token:
            break
        if budget is not None and budget.spent(counts.fetched):
            break
    if not token:
        async with db.transaction() as s:
            await state_repo.mark_synced(s, account.id, cursor=str(started))
            await emit_account(
                s,
                tenant_id=account.tenant_id,
                account_id=account.id,
                type=TenantEventType.account_sync_completed,
            )
    return {
        "status": "continued" if token else "success",
        "provider": "nylas",
        "full": full,
        "received_after": after,
        "fetched": counts.fetched,
        "created": counts.created,
        "updated": counts.updated,
        "unchanged": counts.unchanged,
        "pages": counts.pages,
        **(
            {"resume": {"token": token, "received_after": after, "started": started}}
            if token
            else {}
        ),
    }


# The name worker/tasks/mail.py calls.
sync_account = sync_nylas_account


async def reconcile(db: Database, *, nylas: MessageLister | None) -> dict[str, Any]:
    """Backfill every live Nylas account from its cursor (short transactions per page)."""
    if nylas is None:
        return {"status": "skipped", "reason": "Nylas is not configured"}
    async with db.transaction() as s:
        account_ids = await state_repo.live_nylas_account_ids(s)
    done, created, failed, busy = 0, 0, 0, 0
    for account_id in account_ids:
        try:
            async with db.transaction() as s:
                # SKIP LOCKED: an account row another transaction is changing right now is
                # left for the next sweep. The lock ends with this read: no transaction stays
                # open while Nylas answers. Accounts with a sync job unfinished were already
                # left out above; a sync queued meanwhile only repeats idempotent upserts.
                account = await state_repo.lock_account(s, account_id)
            if account is None:
                busy += 1
                continue
            result = await sync_nylas_account(db, account=account, nylas=nylas, full=False)
            done += 1
            created += result["created"]
            if result["created"]:
                log.info(
                    "reconcile_backfilled", account_id=str(account_id), created=result["created"]
                )
        except PostroomError as exc:
            # One account's trouble (an expired grant, Nylas down) must not stop the others.
            failed += 1
            log.warning(
                "reconcile_failed",
                account_id=str(account_id),
                error=type(exc).__name__,
                message=exc.message,
            )
    return {
        "status": "success",
        "accounts": done,
        "created": created,
        "failed": failed,
        "busy": busy,
    }
