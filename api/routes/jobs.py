"""Every /v1 endpoint that queues work: 202 {event_id, task_id} (API.md "Jobs")."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Request

from api.auth import Principal, PrincipalDep, SenderDep
from api.deps import SettingsDep, UowDep
from api.schemas.accounts import SyncRequest
from api.schemas.common import JobAccepted, error_responses
from api.schemas.events import WorkflowList, WorkflowPublic, WorkflowRun
from api.schemas.messages import MessageDelete, MessageSend
from database.task_names import TaskName
from services.accounts.admin import get_account
from services.errors import ValidationFailed
from services.events import jobs
from services.events.workflows import public_plans
from services.messages import service as messages

router = APIRouter(prefix="/v1", responses=error_responses(401, 404, 409, 413, 422))
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="Repeat the same request with the same key to get the same job back.",
    ),
]
ACCEPTED: dict[str, Any] = {"status_code": 202, "response_model": JobAccepted}


def _caller(p: Principal) -> jobs.Caller:
    return jobs.Caller(tenant_id=p.tenant_id, user_id=p.user_id)


def _accepted(job: jobs.JobRef) -> JobAccepted:
    return JobAccepted(event_id=str(job.event_id), task_id=job.task_id)


@router.post("/accounts/{account_id}/sync", tags=["accounts"], **ACCEPTED)
async def sync_account(
    account_id: uuid.UUID,
    principal: PrincipalDep,
    uow: UowDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
    body: Annotated[SyncRequest | None, Body()] = None,
) -> JobAccepted:
    """Queue a sync of the account (one folder, or all; `full` re-reads everything)."""
    await get_account(uow.session, principal.tenant_id, account_id)
    request = (body or SyncRequest()).model_dump(mode="json")
    job, _ = await jobs.queue_job(
        uow,
        caller=_caller(principal),
        kind="account.sync",
        task_name=TaskName.sync_account,
        task_kwargs={"account_id": str(account_id), **request},
        body={"account_id": str(account_id), **request},
        idempotency_key=idempotency_key,
        stale_after_s=settings.outbox_stale_after_s,
        account_id=account_id,
    )
    await uow.commit()
    return _accepted(job)


@router.post("/messages/send", tags=["messages"], **ACCEPTED)
async def send_message(
    body: MessageSend,
    principal: SenderDep,
    uow: UowDep,
    settings: SettingsDep,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> JobAccepted:
    """Queue a send; the task result has {status, message_id, recipients_sent}. With
    `send_at` it waits (`scheduled`) until then; with `template` and `variables` the
    template is rendered now and a problem with it is 422 now."""
    if body.template is not None and body.content_given():
        raise ValidationFailed("Give either `template` (with `variables`) or subject/text/html.")
    if body.variables is not None and body.template is None:
        raise ValidationFailed("`variables` are given with a `template` only.")
    unset = {k for k in MessageSend.OPTIONAL_NEW if getattr(body, k) is None}
    job = await messages.queue_send(
        uow,
        settings=settings,
        caller=_caller(principal),
        body=body.model_dump(mode="json", exclude=unset),
        idempotency_key=idempotency_key,
        # Where unsubscribe links start (API.md): the setting, else this request's origin.
        public_url=settings.public_url or f"{request.url.scheme}://{request.url.netloc}",
    )
    await uow.commit()
    return _accepted(job)


@router.post("/messages/delete", tags=["messages"], **ACCEPTED)
async def delete_messages(
    body: MessageDelete,
    principal: PrincipalDep,
    uow: UowDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> JobAccepted:
    """Queue a delete (to Trash, or permanent); result {status, deleted_count}."""
    job = await messages.queue_delete(
        uow,
        settings=settings,
        caller=_caller(principal),
        body=body.model_dump(mode="json"),
        idempotency_key=idempotency_key,
    )
    await uow.commit()
    return _accepted(job)


@router.post("/messages/{message_id}/classify", tags=["messages"], **ACCEPTED)
async def classify_message(
    message_id: uuid.UUID,
    principal: PrincipalDep,
    uow: UowDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> JobAccepted:
    """Queue spam/category classification of one message."""
    job = await messages.queue_classify(
        uow,
        settings=settings,
        caller=_caller(principal),
        message_id=message_id,
        idempotency_key=idempotency_key,
    )
    await uow.commit()
    return _accepted(job)


@router.get("/workflows", tags=["workflows"], response_model=WorkflowList)
async def list_workflows(principal: PrincipalDep) -> WorkflowList:
    """The workflow names and their steps."""
    return WorkflowList(
        data=[
            WorkflowPublic(name=n, description=p.description or "", steps=list(p.steps))
            for n, p in public_plans().items()
        ]
    )


@router.post("/workflows/{name}", tags=["workflows"], **ACCEPTED)
async def run_workflow(
    name: str,
    body: WorkflowRun,
    principal: PrincipalDep,
    uow: UowDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> JobAccepted:
    """Start a workflow chain (`sync-and-classify` or `triage`) on an account."""
    task_name, kwargs = jobs.workflow_task(name, body.account_id)
    await get_account(uow.session, principal.tenant_id, body.account_id)
    job, _ = await jobs.queue_job(
        uow,
        caller=_caller(principal),
        kind=f"workflow.{name}",
        task_name=task_name,
        task_kwargs=kwargs,
        body=body.model_dump(mode="json"),
        idempotency_key=idempotency_key,
        stale_after_s=settings.outbox_stale_after_s,
        account_id=body.account_id,
    )
    await uow.commit()
    return _accepted(job)


@router.post("/events/{event_id}/replay", tags=["events"], **ACCEPTED)
async def replay_event(event_id: uuid.UUID, principal: PrincipalDep, uow: UowDep) -> JobAccepted:
    """Run a finished event again (409 while it is still in progress)."""
    job = await jobs.replay_event(uow, tenant_id=principal.tenant_id, event_id=event_id)
    await uow.commit()
    return _accepted(job)
