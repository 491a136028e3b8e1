"""Workflow plans, the one table of them, and starting the chains new mail runs.

A plan is a list of step names; each step is run by one task (STEP_TASKS). Plans with a
description are the API's (`GET /v1/workflows`, `POST /v1/accounts/{id}/workflows/{name}`);
the others are started by postroom itself: `classify-message` for each new message a webhook
brings, `classify-new` once per sync that brought new mail. worker.workflows keeps the run's
step states on the event row; worker.execution runs each step.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Event
from database.repositories.accounts import access as accounts_repo
from database.task_names import TaskName
from services.events.unit_of_work import Job, record_event


@dataclass(frozen=True)
class Plan:
    steps: tuple[str, ...]
    description: str | None = None  # set: a workflow callers may start through the API

    @property
    def public(self) -> bool:
        return self.description is not None


STEP_TASKS: dict[str, TaskName] = {
    "sync": TaskName.sync_account,
    "classify": TaskName.classify,
    "apply_rules": TaskName.apply_rules,
    "move_spam_to_junk": TaskName.apply_rules,
}
PLANS: dict[str, Plan] = {
    "sync-and-classify": Plan(
        ("sync", "classify"), "Sync the account, then classify the new messages."
    ),
    "triage": Plan(
        ("sync", "classify", "move_spam_to_junk"),
        "Sync the account, classify the new messages, move spam to Junk.",
    ),
    "classify-message": Plan(("classify", "apply_rules")),
    "classify-new": Plan(("classify", "apply_rules")),
}
# The step a task runs when its event is not part of a workflow.
DEFAULT_STEP: dict[str, str] = {
    TaskName.classify: "classify",
    TaskName.apply_rules: "apply_rules",
    TaskName.sync_account: "sync",
}


def public_plans() -> dict[str, Plan]:
    return {name: plan for name, plan in PLANS.items() if plan.public}


def steps_of(workflow: str | None, task_name: str) -> tuple[str, ...]:
    """The step names an event runs: its workflow's plan, or the task's own step alone."""
    plan = PLANS.get(str(workflow))
    return plan.steps if plan is not None else (DEFAULT_STEP[task_name],)


async def start_message_chains(
    session: AsyncSession,
    *,
    parent: Event,
    tenant_id: uuid.UUID | None,
    account_id: uuid.UUID | None,
    message_ids: list[uuid.UUID],
    stale_after_s: float,
) -> list[Job]:
    """In the parent's transaction: one `classify-message` run per new or changed message.

    Returns what to publish after the commit. The external id makes a re-run of the parent
    (a redelivered notification) start no second chain for the same message.
    """
    if not message_ids or tenant_id is None or account_id is None:
        return []
    account = await accounts_repo.get_for_tenant(session, tenant_id, account_id)
    if account is None:
        return []
    jobs = []
    for message_id in message_ids:
        kwargs = {
            "message_id": str(message_id),
            "tenant_id": str(account.tenant_id),
            "user_id": str(account.user_id),
            "workflow": "classify-message",
        }
        job = await record_event(
            session,
            task_name=STEP_TASKS["classify"],
            kwargs=kwargs,
            source=parent.source,
            type="workflow.classify-message",
            external_id=f"{parent.id}:classify:{message_id}",
            payload={"parent_event_id": str(parent.id), "kwargs": kwargs},
            stale_after_s=stale_after_s,
            tenant_id=account.tenant_id,
            user_id=account.user_id,
            account_id=account.id,
            request_id=parent.request_id,
        )
        if job is not None:
            jobs.append(job)
    return jobs


async def start_account_chain(
    session: AsyncSession,
    *,
    parent: Event,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID | None,
    account_id: uuid.UUID,
    stale_after_s: float,
) -> list[Job]:
    """In a sync's transaction: one `classify-new` run over the account's unclassified mail.

    One run per sync, not one per message: a first sync of 100,000 messages must not become
    100,000 events. Returns what to publish after the commit.
    """
    kwargs = {
        "account_id": str(account_id),
        "tenant_id": str(tenant_id),
        "user_id": str(user_id) if user_id else None,
        "workflow": "classify-new",
    }
    job = await record_event(
        session,
        task_name=STEP_TASKS["classify"],
        kwargs=kwargs,
        source=parent.source,
        type="workflow.classify-new",
        external_id=f"{parent.id}:classify-new:{parent.attempts}",
        payload={"parent_event_id": str(parent.id), "kwargs": kwargs},
        stale_after_s=stale_after_s,
        tenant_id=tenant_id,
        user_id=user_id,
        account_id=account_id,
        request_id=parent.request_id,
    )
    return [job] if job is not None else []
