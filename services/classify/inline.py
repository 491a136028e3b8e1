"""A new message's `classify-message` run, done inside the transaction that stores it.

The run (services.events.steps, plan "classify-message": classify, then apply_rules) normally
costs two more tasks, each with its own claim, step bookkeeping and commit: about two thirds of
the statements and most of the transactions of a webhook's message (docs/benchmarks.md "Event
drain"). When every rule that matches is local (a label), nothing in the run talks to the
outside world, so it runs in the same transaction as the message itself, in a single commit:
the message, its verdict, its labels and the finished run's event row commit together or not
at all. One set-based path for n messages (a batch of webhooks, services.nylas.batch) and for one
(`classify_and_apply`): a read of the messages, their attachment names, the tenant's model and
the account's rules, then one verdict-and-labels executemany and one insert of the runs.

Anything else keeps the general path: a matching rule that moves mail (a Nylas call that may
fail, retry or dead-letter per step), or an error while reading and deciding. Nothing has been
written by then, and the caller starts the run as before (services.events.workflows.
start_message_chains), which classifies again from scratch: classification is deterministic,
so the run's steps, attempts, retries and dead letters are exactly what they were.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from database.models import Account, EventStatus
from database.repositories import classifier as classify_repo
from database.repositories import rules as rules_repo
from database.repositories.events import lifecycle
from database.repositories.events.lifecycle import history_entry
from database.task_names import TaskName
from services.classify import mail, rules
from services.classify.service import verdicts
from services.events.steps import Steps
from services.tenant_events.emit import TenantEventType, emit_messages

log = structlog.get_logger(__name__)
# Rule actions that only write to this database.
LOCAL_ACTIONS = frozenset({"label"})


@dataclass
class Decided:
    """What the runs of n new messages come to, before anything is written."""

    verdicts: list[dict[str, Any]] = field(default_factory=list)  # save_verdicts_and_labels
    runs: list[dict[str, Any]] = field(default_factory=list)  # finished_run rows
    through_steps: list[int] = field(default_factory=list)  # inputs for the step tasks


async def decide(
    session: AsyncSession, *, account: Account, new: list[tuple[Parent, uuid.UUID]]
) -> Decided:
    """Read and decide the run of each (notification, new message): its verdict and labels
    and its finished run row, or (by index) the step tasks when a matching rule is not local
    or the message is gone. Reads only."""
    done = Decided()
    if not new:
        return done
    tenant = account.tenant_id
    ids = [mid for _, mid in new]
    messages = await classify_repo.get_messages(session, tenant_id=tenant, message_ids=ids)
    for message in messages.values():
        # Read-only here: the verdicts and labels are written by record().
        session.expunge(message)
    names = await classify_repo.attachment_names_many(session, list(messages))
    ready = []
    for n, (parent, mid) in enumerate(new):
        if mid in messages:
            ready.append((n, parent, messages[mid]))
        else:  # gone meanwhile: the steps find out what happened to it
            done.through_steps.append(n)
    found = await verdicts(
        session,
        tenant_id=tenant,
        docs=[mail.from_message(m, names.get(m.id, [])) for _, _, m in ready],
    )
    enabled = await rules_repo.enabled_terms(session, tenant_id=tenant, account_id=account.id)
    for (n, parent, message), verdict in zip(ready, found, strict=True):
        for key, column in (
            ("is_spam", "is_spam"),
            ("spam_score", "spam_score"),
            ("indicators", "spam_indicators"),
            ("category", "category"),
        ):
            set_committed_value(message, column, verdict[key])
        matching = [r for r in enabled if rules.matches(r.condition, message)]
        if any(r.action.get("type") not in LOCAL_ACTIONS for r in matching):
            done.through_steps.append(n)  # a rule that moves mail: the step tasks
            continue
        labels = list(message.labels or [])
        applied = []
        for rule in matching:  # rules.apply_label, for many messages at once
            label = rule.action["label"]
            if label not in labels:
                labels.append(label)
                applied.append(f"label:{label}")
        done.verdicts.append(
            {
                "id": message.id,
                "is_spam": verdict["is_spam"],
                "spam_score": verdict["spam_score"],
                "indicators": verdict["indicators"],
                "category": verdict["category"],
                "labels": labels,
            }
        )
        outcome = {
            "status": "success",
            "message_id": str(message.id),
            "matched": [str(r.id) for r in matching],
            "applied": applied,
        }
        done.runs.append(
            finished_run(
                parent=parent,
                account=account,
                mid=message.id,
                classified=verdict,
                outcome=outcome,
            )
        )
    return done


async def record(session: AsyncSession, done: Decided, *, tenant_id: uuid.UUID) -> None:
    """Write what decide() came to: verdicts and labels (each message tells the tenant
    `message.classified`, one read and one INSERT for all), then the finished runs."""
    await classify_repo.save_verdicts_and_labels(session, done.verdicts)
    await emit_messages(
        session,
        tenant_id=tenant_id,
        type=TenantEventType.message_classified,
        message_ids=[v["id"] for v in done.verdicts],
    )
    await insert_finished_runs(session, done.runs)


async def classify_and_apply(
    session: AsyncSession, *, parent: Parent, account: Account, message_id: uuid.UUID
) -> bool:
    """Run one new message's classify-message run here (decide and record with n = 1);
    False when it must go through the steps.

    Everything is read and decided before the first write, so falling back leaves nothing to
    undo and needs no savepoint. An error in a write fails the whole transaction, message
    included, and the process task retries it.
    """
    try:
        done = await decide(session, account=account, new=[(parent, message_id)])
    except Exception as exc:  # the step tasks run it again and handle it as they always have
        log.info("inline_run_fell_back", error=type(exc).__name__)
        return False
    if done.through_steps:
        return False
    await record(session, done, tenant_id=account.tenant_id)
    return True


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
