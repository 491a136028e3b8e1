"""`postroom.mail.sync_account` and `postroom.mail.delete`: thin wrappers over services."""

from __future__ import annotations

import uuid
from typing import Any

from celery import Task
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Event, Provider
from database.repositories import events as events_repo
from database.task_names import TaskName
from services.imap_sync import Budget, SyncResult, run_sync
from services.mail_accounts import account_for_tenant
from services.mail_delete import delete_messages
from services.nylas_events import Outcome
from services.pop3_sync import run_pop3_sync
from services.unit_of_work import Job
from services.workflows import start_account_chain
from worker.app import celery_app
from worker.execution import CONTINUED, publish_all, run_task
from worker.runtime import runtime


@celery_app.task(name=TaskName.sync_account.value, bind=True, max_retries=None)
def sync_account(
    self: Task,
    event_id: str,
    account_id: str,
    tenant_id: str,
    user_id: str,
    folder: str | None = None,
    full: bool = False,
    workflow: str | None = None,
) -> dict[str, Any]:
    tenant, account_uuid = uuid.UUID(tenant_id), uuid.UUID(account_id)

    async def work(session: AsyncSession, event: Event, _step: str) -> Outcome:
        rt = runtime()
        # Tenant check first: a mismatch is PermissionDenied, permanent, no server touched.
        account = await account_for_tenant(session, tenant_id=tenant, account_id=account_uuid)
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
            self.update_state(state="PROGRESS", meta=meta)
            async with rt.db.transaction() as s:
                await events_repo.set_progress(
                    s, event_id=event.id, progress=meta, lease_s=rt.settings.claim_lease_s
                )

        if account.provider == Provider.nylas:
            result = await _nylas_sync(session, account=account, full=full, progress=progress)
        elif account.provider == Provider.pop3:
            result = (
                await run_pop3_sync(
                    rt.db,
                    rt.settings,
                    tenant_id=tenant,
                    account_id=account_uuid,
                    folder=folder,
                    progress=progress,
                )
            ).as_dict()
        else:
            part = await run_sync(
                rt.db,
                rt.settings,
                tenant_id=tenant,
                account_id=account_uuid,
                folder=folder,
                full=full,
                progress=progress,
                budget=Budget(
                    messages=rt.settings.bulk_part_messages, seconds=rt.settings.bulk_part_s
                ),
                resume=before.get("resume"),
            )
            state, result = add_part(before, part)
            await events_repo.set_progress(
                session, event_id=event.id, progress=state, lease_s=rt.settings.claim_lease_s
            )
            if part.cut:  # the next part goes on where this one stopped (worker.execution)
                return Outcome(
                    status=CONTINUED, result=result, tenant_id=tenant, account_id=account_uuid
                )
        if not workflow and result.get("new"):  # new mail: classify -> apply_rules after commit
            chains[:] = await start_account_chain(
                session,
                parent=event,
                tenant_id=tenant,
                user_id=account.user_id,
                account_id=account_uuid,
                stale_after_s=rt.settings.outbox_stale_after_s,
            )
        return Outcome(status="succeeded", result=result, tenant_id=tenant, account_id=account_uuid)

    chains: list[Job] = []
    # The first step of a workflow chain: the engine hands the event on to the next step.
    outcome = run_task(self, event_id=event_id, work=work, step=bool(workflow))
    publish_all(self.app, chains)
    return outcome


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
    earlier = before.get("totals") or {}
    totals = {k: int(earlier.get(k, 0)) + getattr(part, k) for k in COUNTS}
    parts = int(before.get("parts", 0)) + 1
    synced = int(before.get("synced", 0)) + part.new + part.updated
    state: dict[str, Any] = {"current": synced, "total": synced}
    if parts > 1:
        state["parts"] = parts
    if part.cut:  # what the next part needs: where to go on, and the counts so far
        state.update(
            continues=True, parts=parts, synced=synced, totals=totals, resume=part.resume()
        )
    result = {
        "status": "continued" if part.cut else "success",
        "folders": part.folders,
        **totals,
    }  # the shape of an uncut sync's result; how many parts it took is in the progress
    return state, result


async def _nylas_sync(
    session: AsyncSession, *, account: Any, full: bool, progress: Any
) -> dict[str, Any]:
    """Nylas accounts: messages.list with received_after and cursor pages (services.nylas_sync)."""
    from services.nylas_sync import sync_nylas_account

    return await sync_nylas_account(
        session, account=account, nylas=runtime().nylas, full=full, progress=progress
    )


@celery_app.task(name=TaskName.delete.value, bind=True, max_retries=None)
def delete(
    self: Task,
    event_id: str,
    message_ids: list[str],
    tenant_id: str,
    user_id: str,
    permanent: bool = False,
) -> dict[str, Any]:
    tenant = uuid.UUID(tenant_id)

    async def work(session: AsyncSession, event: Event, _step: str) -> Outcome:
        rt = runtime()
        count = await delete_messages(
            session,
            rt.settings,
            tenant_id=tenant,
            message_ids=[uuid.UUID(m) for m in message_ids],
            permanent=permanent,
            nylas=rt.nylas,
        )
        return Outcome(
            status="succeeded",
            result={"status": "success", "deleted_count": count},
            tenant_id=tenant,
        )

    return run_task(self, event_id=event_id, work=work)
