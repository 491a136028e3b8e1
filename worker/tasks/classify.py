"""`postroom.mail.classify` and `postroom.mail.apply_rules`: workflow steps (worker.execution)."""

from __future__ import annotations

import uuid
from typing import Any

from celery import Task
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Event
from database.repositories import rules as rules_repo
from database.repositories.messages import rows as messages_repo
from database.task_names import TaskName
from services.accounts import access as mail_accounts
from services.classify import rules
from services.classify.service import classify_message, refit_job
from services.classify.tenant import refit_when_due
from services.errors import ValidationFailed
from services.events.outcome import Outcome
from worker import dispatch
from worker.app import celery_app
from worker.execution import run_task
from worker.runtime import runtime


async def _classify(
    session: AsyncSession, event: Event, tenant: uuid.UUID, kwargs: dict[str, Any]
) -> Outcome:
    if kwargs.get("message_id"):
        result = await classify_message(
            session, tenant_id=tenant, message_id=uuid.UUID(kwargs["message_id"])
        )
        return Outcome("succeeded", result=result, tenant_id=tenant, account_id=event.account_id)
    # After a sync: every message of the account still without a verdict.
    account = await mail_accounts.account_for_tenant(
        session, tenant_id=tenant, account_id=uuid.UUID(kwargs["account_id"])
    )
    ids = await rules_repo.unclassified(session, tenant_id=tenant, account_id=account.id)
    spam = 0
    for message_id in ids:
        spam += bool(
            (await classify_message(session, tenant_id=tenant, message_id=message_id))["is_spam"]
        )
    # The ids (never the messages) are what the next step, apply_rules, works through.
    return Outcome(
        "succeeded",
        result={
            "status": "success",
            "classified": len(ids),
            "spam": spam,
            "message_ids": [str(i) for i in ids],
        },
        tenant_id=tenant,
        account_id=account.id,
    )


async def _rules(
    session: AsyncSession, event: Event, tenant: uuid.UUID, kwargs: dict[str, Any], step: str
) -> Outcome:
    rt = runtime()
    if step == "apply_rules" and kwargs.get("message_id"):
        result = await rules.apply_rules(
            rt.db,
            settings=rt.settings,
            nylas=rt.nylas,
            tenant_id=tenant,
            message_id=uuid.UUID(kwargs["message_id"]),
        )
        return Outcome("succeeded", result=result, tenant_id=tenant, account_id=event.account_id)
    if step == "apply_rules":
        # After an account-wide classify step: the messages that step classified.
        previous = next(
            (st.get("result") or {} for st in event.steps or [] if st.get("name") == "classify"), {}
        )
        applied = 0
        for message_id in previous.get("message_ids", []):
            result = await rules.apply_rules(
                rt.db,
                settings=rt.settings,
                nylas=rt.nylas,
                tenant_id=tenant,
                message_id=uuid.UUID(message_id),
            )
            applied += len(result["applied"])
        return Outcome(
            "succeeded",
            result={"status": "success", "actions": applied},
            tenant_id=tenant,
            account_id=event.account_id,
        )
    if step != "move_spam_to_junk":
        raise ValidationFailed(f"Unknown step {step!r}.")
    # Rules moves talk to the mail server: the step reads in a short transaction of its own
    # and `session` (the engine's, which records the step) stays unused until they are done.
    async with rt.db.transaction() as s:
        account = await mail_accounts.account_for_tenant(
            s, tenant_id=tenant, account_id=uuid.UUID(kwargs["account_id"])
        )
        junk = await messages_repo.folder_by_role(
            s, tenant_id=tenant, account_id=account.id, role="junk"
        )
        if junk is None:
            raise ValidationFailed("The account has no Junk folder to move spam to.")
        spam = await rules_repo.spam_messages_outside(
            s, tenant_id=tenant, account_id=account.id, folder_id=junk.id
        )
    moved = 0
    for message_id in spam:
        result = await rules.apply_rules(
            rt.db,
            settings=rt.settings,
            nylas=rt.nylas,
            tenant_id=tenant,
            message_id=message_id,
            only=[rules.JUNK_RULE],
        )
        moved += bool(result["applied"])
    return Outcome(
        "succeeded",
        result={"status": "success", "moved_to_junk": moved},
        tenant_id=tenant,
        account_id=account.id,
    )


def _run_step(
    task: Task,
    tenant_id: str,
    user_id: str,
    event_id: str,
    message_id: str | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Both tasks run whichever step the event says is next (classify or a rules step)."""

    async def work(session: AsyncSession, event: Event, step: str) -> Outcome:
        # The engine checked the task's tenant against its event before this runs.
        tenant, kwargs = uuid.UUID(tenant_id), dict(event.task_kwargs or {})
        if step == "classify":
            return await _classify(session, event, tenant, kwargs)
        return await _rules(session, event, tenant, kwargs, step)

    return run_task(
        task,
        event_id=event_id,
        work=work,
        kwargs={"message_id": message_id, "tenant_id": tenant_id, "user_id": user_id, **extra},
        step=True,
    )


@celery_app.task(name=TaskName.classify.value, bind=True, max_retries=None)
def classify(
    self: Task,
    tenant_id: str,
    user_id: str,
    event_id: str,
    message_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return _run_step(self, tenant_id, user_id, event_id, message_id, extra)


@celery_app.task(name=TaskName.apply_rules.value, bind=True, max_retries=None)
def apply_rules(
    self: Task,
    tenant_id: str,
    user_id: str,
    event_id: str,
    message_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return _run_step(self, tenant_id, user_id, event_id, message_id, extra)


@celery_app.task(name=TaskName.refit_tenant.value, bind=True, max_retries=0)
def refit_tenant(self: Task, tenant_id: str) -> dict[str, Any]:
    """Refit a tenant's model after its labels changed (tenant.refit_when_due): not
    event-backed, never retried; changes too few and too recent ask again when due."""
    rt = runtime()
    tenant = uuid.UUID(tenant_id)
    done = rt.run(refit_when_due(rt.db, tenant_id=tenant))
    if done.status == "later" and done.later_s is not None:
        dispatch.publish(self.app, **refit_job(tenant).fields(), countdown=done.later_s)
    return {"status": done.status, "generation": done.generation, "later_s": done.later_s}
