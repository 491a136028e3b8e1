"""A new message's `classify-message` run, done inside the transaction that stores it.

The run (worker.workflows, plan "classify-message": classify, then apply_rules) normally costs
two more tasks, each with its own claim, step bookkeeping and commit: about two thirds of the
statements and most of the transactions of a webhook's message (docs/benchmarks.md "Event
drain"). When every rule that matches is local (a label), nothing in the run talks to the
outside world, so it can run in the same transaction as the message itself, in a
single commit: the message, its verdict, its labels and the finished run's event row commit
together or not at all.

Anything else keeps the general path: a matching rule that moves mail (a Nylas call that may
fail, retry or dead-letter per step), or an error while reading and deciding. Nothing has been
written by then, and the caller starts the run as before (worker.workflows.
start_message_chains), which classifies again from scratch: classification is deterministic,
so the run's steps, attempts, retries and dead letters are exactly what they were.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

import structlog
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from database.models import Account, Event, EventStatus
from database.repositories import classifier as classify_repo
from database.repositories import rules as rules_repo
from database.repositories.events import lifecycle
from database.repositories.events.lifecycle import history_entry
from database.task_names import TaskName
from services.classify import rules
from services.classify.service import doc_for, verdict
from settings import Settings
from worker.workflows import Steps

log = structlog.get_logger(__name__)
# Rule actions that only write to this database.
LOCAL_ACTIONS = frozenset({"label"})


async def classify_and_apply(
    session: AsyncSession,
    *,
    settings: Settings,
    parent: Event,
    account: Account,
    message_id: uuid.UUID,
) -> bool:
    """Run the message's classify-message run here; False when it must go through the steps.

    Everything is read and decided before the first write, so falling back leaves nothing to
    undo and needs no savepoint (two round trips per message saved). An error in a write
    fails the whole transaction, message included, and the process task retries it.
    """
    tenant = account.tenant_id
    try:
        message = await classify_repo.get_message(session, tenant_id=tenant, message_id=message_id)
        if message is None:
            return False
        # Read-only: the verdict and labels are written by statements of their own below, so
        # the ORM must not write them a second time when the transaction flushes.
        session.expunge(message)
        found = await verdict(session, tenant_id=tenant, doc=await doc_for(session, message))
        # What apply_rules would read back from the row, set without marking anything dirty.
        for key, column in (
            ("is_spam", "is_spam"),
            ("spam_score", "spam_score"),
            ("indicators", "spam_indicators"),
            ("category", "category"),
        ):
            set_committed_value(message, column, found[key])
        enabled = await rules_repo.list_for_account(
            session, tenant_id=tenant, account_id=account.id, enabled_only=True
        )
        matching = [r for r in enabled if rules.matches(r.condition, message)]
    except Exception as exc:  # the step tasks run it again and handle it as they always have
        log.info("inline_run_fell_back", error=type(exc).__name__)
        return False
    if any(r.action.get("type") not in LOCAL_ACTIONS for r in matching):
        return False
    await classify_repo.save_verdict(
        session,
        message_id=message_id,
        is_spam=found["is_spam"],
        spam_score=found["spam_score"],
        indicators=found["indicators"],
        category=found["category"],
    )
    applied = []
    for rule in matching:
        done = await rules.apply_label(session, message=message, label=rule.action["label"])
        if done:
            applied.append(done)
    outcome = {
        "status": "success",
        "message_id": str(message_id),
        "matched": [str(r.id) for r in matching],
        "applied": applied,
    }
    await _insert_finished(
        session, parent=parent, account=account, mid=message_id, classified=found, outcome=outcome
    )
    return True


async def _insert_finished(
    session: AsyncSession,
    *,
    parent: Event,
    account: Account,
    mid: uuid.UUID,
    classified: dict[str, Any],
    outcome: dict[str, Any],
) -> None:
    """The run's event row as its two step tasks would have left it: succeeded, both steps."""
    await insert_finished_runs(
        session,
        [
            finished_run(
                parent=parent, account=account, mid=mid, classified=classified, outcome=outcome
            )
        ],
    )


class Parent(Protocol):
    """What a run's row takes from the notification that started it."""

    id: uuid.UUID
    source: str
    request_id: str | None


def finished_run(
    *,
    parent: Parent,
    account: Account,
    mid: uuid.UUID,
    classified: dict[str, Any],
    outcome: dict[str, Any],
) -> dict[str, Any]:
    """The column values of a finished `classify-message` run (both steps succeeded)."""
    event_id = uuid.uuid4()
    classify_id = str(uuid.uuid4())
    rules_id = f"{event_id}.apply_rules.{uuid.uuid4().hex[:8]}"
    kwargs = {
        "message_id": str(mid),
        "tenant_id": str(account.tenant_id),
        "user_id": str(account.user_id),
        "workflow": "classify-message",
    }
    run = Steps.ran_inline(
        "classify-message",
        {"classify": (classify_id, classified), "apply_rules": (rules_id, outcome)},
    )
    history = [
        history_entry(task_id=tid, outcome=EventStatus.succeeded, at_once=True)
        for tid in (classify_id, rules_id)
    ]
    return {
        "id": event_id,
        "tenant_id": account.tenant_id,
        "user_id": account.user_id,
        "account_id": account.id,
        "source": parent.source,
        "type": "workflow.classify-message",
        "external_id": f"{parent.id}:classify:{mid}",
        "task_name": TaskName.apply_rules.value,
        "task_kwargs": kwargs,
        "payload": {"parent_event_id": str(parent.id), "kwargs": kwargs},
        "status": EventStatus.succeeded,
        "attempts": 2,
        "task_ids": [classify_id, rules_id],
        "current_task_id": rules_id,
        "history": history,
        "steps": run.steps,
        "result": run.summary(outcome),
        "request_id": parent.request_id,
        "publish_count": 0,
    }


async def insert_finished_runs(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Insert finished runs (finished_run): one statement (lifecycle.insert_finished)."""
    await lifecycle.insert_finished(session, rows)
