"""`postroom.mail.send`: send one message for an event, at most once."""

from __future__ import annotations

import uuid
from typing import Any

from celery import Task
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Event
from database.repositories import accounts as accounts_repo
from services.errors import PermissionDenied
from services.nylas_events import Outcome
from services.send import SendRequest, send_message
from worker.app import celery_app
from worker.runtime import runtime
from worker.tasks.base import run_event_task


@celery_app.task(name="postroom.mail.send", bind=True, max_retries=None)
def send(
    self: Task,
    event_id: str,
    account_id: str,
    tenant_id: str,
    user_id: str,
    to: list[Any],
    cc: list[Any] | None = None,
    bcc: list[Any] | None = None,
    subject: str = "",
    body_text: str | None = None,
    body_html: str | None = None,
    attachment_ids: list[str] | None = None,
    reply_to_message_id: str | None = None,
) -> dict[str, Any]:
    request = SendRequest(
        to=to,
        cc=cc or [],
        bcc=bcc or [],
        subject=subject,
        body_text=body_text,
        body_html=body_html,
        attachment_ids=attachment_ids or [],
        reply_to_message_id=reply_to_message_id,
    )

    async def work(session: AsyncSession, event: Event) -> Outcome:
        rt = runtime()
        tenant = uuid.UUID(tenant_id)
        # Tenant-scoped load first: an account of another tenant is never touched.
        account = await accounts_repo.get_for_tenant(session, tenant, uuid.UUID(account_id))
        if account is None or (event.tenant_id is not None and event.tenant_id != tenant):
            raise PermissionDenied("The account does not belong to this tenant.")
        return await send_message(
            session,
            db=rt.db,
            settings=rt.settings,
            account=account,
            event=event,
            request=request,
            nylas=rt.nylas,
        )

    return run_event_task(
        self,
        event_id=event_id,
        work=work,
        kwargs={
            "account_id": account_id,
            "tenant_id": tenant_id,
            "user_id": user_id,
        },
    )
