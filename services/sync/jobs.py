"""The parts of bulk jobs on an account: a sync (IMAP, POP3 or Nylas) and a mass delete.

What postroom.mail.sync_account and postroom.mail.delete run through the engine, one bounded
part per task (services.parts): the provider switch, each part's progress on the event, the
counts summed over parts, and the classify chain and the thumbnail job a sync that brought
new mail starts (their Jobs go in the Outcome, published after the engine's commit).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Event, Provider
from database.repositories.events import rows as events_repo
from services.accounts.access import account_for_tenant
from services.deps import Deps
from services.events.outcome import CONTINUED, Outcome
from services.events.unit_of_work import Job
from services.events.workflows import start_account_chain
from services.imap.sync import run_sync
from services.messages.delete import delete_part
from services.messages.thumbnails import start_thumbnails
from services.nylas.sync import sync_nylas_account
from services.parts import add_counts
from services.pop3.sync import run_pop3_sync
from services.sync.budget import Budget
from services.sync.result import SyncResult


async def sync_part(
    session: AsyncSession,
    event: Event,
    *,
    rt: Deps,
    tenant: uuid.UUID,
    account_uuid: uuid.UUID,
    folder: str | None,
    full: bool,
    workflow: str | None,
    report: Callable[[dict[str, Any]], None],
) -> Outcome:
    """One part of postroom.mail.sync_account, in the engine's transaction `session`.

    `report` shows the progress where the task's caller can see it (Celery's PROGRESS state).
    """
    # Tenant check first: a mismatch is PermissionDenied, permanent, no server touched.
    # Read in a transaction of its own that commits before any mail server is talked to:
    # `session` (the engine's, which finishes the event) is first used only after the
    # conversation, so no connection sits idle in transaction while the server answers.
    async with rt.db.transaction() as s:
        account = await account_for_tenant(s, tenant_id=tenant, account_id=account_uuid)
    # An IMAP sync runs in bounded parts; `before` is where the earlier parts stopped.
    before = earlier_parts(event)
    synced_before = int(before.get("synced", 0))

    async def progress(current: int, total: int) -> None:
        meta = {
            **before,
            "current": synced_before + current,
            "total": synced_before + total,
            "parts": int(before.get("parts", 0)) + 1,
        }
        report(meta)
        async with rt.db.transaction() as s:
            await events_repo.set_progress(
                s, event_id=event.id, progress=meta, lease_s=rt.settings.claim_lease_s
            )

    # Every provider's sync is a bounded part (services.parts): the same budget and the same
    # progress shape; a cut part hands the job on to the next (worker.execution CONTINUED).
    budget = Budget(messages=rt.settings.bulk_part_messages, seconds=rt.settings.bulk_part_s)
    if account.provider == Provider.nylas:
        state, result, cut = await _nylas_part(
            rt, account=account, full=full, progress=progress, budget=budget, before=before
        )
    else:
        if account.provider == Provider.pop3:  # resumes by itself: stored UIDLs are skipped
            part = await run_pop3_sync(
                rt.db,
                rt.settings,
                tenant_id=tenant,
                account_id=account_uuid,
                folder=folder,
                progress=progress,
                budget=budget,
            )
        else:
            part = await run_sync(
                rt.db,
                rt.settings,
                tenant_id=tenant,
                account_id=account_uuid,
                folder=folder,
                full=full,
                progress=progress,
                budget=budget,
                resume=before.get("resume"),
            )
        (state, result), cut = add_part(before, part), part.cut
    await events_repo.set_progress(
        session, event_id=event.id, progress=state, lease_s=rt.settings.claim_lease_s
    )
    if cut:  # the next part goes on where this one stopped (worker.execution)
        return Outcome(status=CONTINUED, result=result, tenant_id=tenant, account_id=account_uuid)
    chains: list[Job] = []
    if not workflow and result.get("new"):  # new mail: classify -> apply_rules after commit
        chains = await start_account_chain(
            session,
            parent=event,
            tenant_id=tenant,
            user_id=account.user_id,
            account_id=account_uuid,
            stale_after_s=rt.settings.outbox_stale_after_s,
        )
    thumbs: list[Job] = []
    if result.get("new") or result.get("created"):  # previews of its images, in bulk
        thumbs = await start_thumbnails(
            session,
            parent=event,
            tenant_id=tenant,
            user_id=account.user_id,
            account_id=account_uuid,
            stale_after_s=rt.settings.outbox_stale_after_s,
        )
    return Outcome(
        status="succeeded",
        result=result,
        tenant_id=tenant,
        account_id=account_uuid,
        publish=[*chains, *thumbs],
    )


COUNTS = ("new", "updated", "deleted")


def earlier_parts(event: Event) -> dict[str, Any]:
    """The progress the last part of this sync left for the next ({} for a new sync).

    A finished sync leaves `continues` false, so a replay of it starts afresh; a sync that
    died between parts and is replayed goes on where it stopped.
    """
    progress = event.progress or {}
    return dict(progress) if progress.get("continues") else {}


def add_part(before: dict[str, Any], part: SyncResult) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the event's new progress, the job's result so far): counts summed over all parts."""
    state, totals = add_counts(
        before,
        {k: getattr(part, k) for k in COUNTS},
        done=part.new + part.updated,
        cut=part.cut,
        resume=part.resume(),
    )
    result = {
        "status": "continued" if part.cut else "success",
        "folders": part.folders,
        **totals,
    }  # the shape of an uncut sync's result; how many parts it took is in the progress
    return state, result


NYLAS_COUNTS = ("fetched", "created", "updated", "unchanged", "pages")


async def _nylas_part(
    rt: Deps,
    *,
    account: Any,
    full: bool,
    progress: Any,
    budget: Budget,
    before: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """Nylas accounts: messages.list with received_after and cursor pages (services.nylas.sync),
    one budget's worth of pages; the next part goes on from the page token in `resume`.
    Answers (the event's new progress, the job's result so far, whether this part was cut)."""
    part = await sync_nylas_account(
        rt.db,
        account=account,
        nylas=rt.nylas,
        full=full,
        progress=progress,
        budget=budget,
        resume=before.get("resume"),
    )
    resume = part.pop("resume", None)
    state, totals = add_counts(
        before,
        {k: part[k] for k in NYLAS_COUNTS},
        done=part["fetched"],
        cut=resume is not None,
        resume=resume,
    )
    return state, {**part, **totals}, resume is not None


async def delete_job_part(
    session: AsyncSession,
    event: Event,
    *,
    rt: Deps,
    tenant: uuid.UUID,
    message_ids: list[str],
    permanent: bool,
) -> Outcome:
    """One part of postroom.mail.delete, in the engine's transaction `session`."""
    # A bounded part like a sync's: the ids stay in the task message, the progress says
    # how far into them the earlier parts got (services.parts, services.messages.delete).
    before = earlier_parts(event)
    ids = list(dict.fromkeys(uuid.UUID(m) for m in message_ids))
    start = int((before.get("resume") or {}).get("offset", 0))
    count, offset = await delete_part(
        rt.db,
        rt.settings,
        tenant_id=tenant,
        message_ids=ids,
        permanent=permanent,
        nylas=rt.nylas,
        budget=Budget(messages=rt.settings.bulk_part_messages, seconds=rt.settings.bulk_part_s),
        start=start,
    )
    cut = offset < len(ids)
    state, totals = add_counts(
        before,
        {"deleted_count": count},
        done=offset - start,
        cut=cut,
        resume={"offset": offset},
        total=len(ids),
    )
    await events_repo.set_progress(
        session, event_id=event.id, progress=state, lease_s=rt.settings.claim_lease_s
    )
    result = {"status": "continued" if cut else "success", **totals}
    return Outcome(status=CONTINUED if cut else "succeeded", result=result, tenant_id=tenant)
