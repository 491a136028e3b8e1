"""The steps of a classify run (`classify`, then `apply_rules` or `move_spam_to_junk`): what the
postroom.mail.classify and postroom.mail.apply_rules tasks run through the engine."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Event
from database.repositories import rules as rules_repo
from database.repositories.messages import rows as messages_repo
from services.accounts import access as mail_accounts
from services.classify import rules
from services.classify.service import classify_message
from services.deps import Deps
from services.errors import ValidationFailed
from services.events.outcome import Outcome


async def run_step(
    session: AsyncSession, event: Event, step: str, *, rt: Deps, tenant_id: uuid.UUID
) -> Outcome:
    """Run whichever step the event says is next; the engine checked the tenant already."""
    kwargs = dict(event.task_kwargs or {})
    if step == "classify":
        return await _classify(session, event, tenant_id, kwargs)
    return await _rules(rt, event, tenant_id, kwargs, step)


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
    rt: Deps, event: Event, tenant: uuid.UUID, kwargs: dict[str, Any], step: str
) -> Outcome:
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
