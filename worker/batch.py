"""A process task for a `message.created` also does its grant's other waiting ones (a batch).

Per message, the drain of a burst of webhooks was one task, two transactions and 15 SQL
statements, each a round trip (docs/benchmarks.md "Event drain"). Here the task that claimed
event E locks up to POSTROOM_CREATED_BATCH - 1 more `message.created` notifications of the
same grant that no worker has taken yet (newest first, FOR UPDATE SKIP LOCKED) and stores,
classifies and rules all of them in E's transaction with set-based statements: one folder
upsert, one thread insert, one multi-row message upsert, one read of the tenant's token
counts, one verdict-and-labels executemany, one insert of the finished `classify-message`
runs, one update ending the others. About a dozen statements for the batch instead of 15 a
message.

What stays as it was:
- Exactly once. The others stay locked until E's transaction ends; they commit `succeeded`
  with it (their history names E's task), or, on any rollback (an error, a worker that dies),
  go back untouched to their own task messages. Those messages then find their event finished
  and ack it at the cost of one claim statement; the outbox sweeper skips locked rows and never
  sees a finished one.
- Fairness. Only E's grant's (so its tenant's) notifications, at most a batch of them: a
  tenant's backlog is worked off faster, and never at another tenant's turn.
- A bad notification. The batch runs in a savepoint: if one of its statements fails (a row
  PostgreSQL refuses), the savepoint is rolled back and E runs alone on the usual path; the
  others are released to their own task messages, where the bad one retries and dead-letters
  on its own, and this worker process leaves all of them out of its later batches for a while
  (`_Suspects`), so one bad row costs one failed batch, not one per leader. One that fails
  while read (no id, an address list of the wrong shape) is left out before anything is
  written. One that kills its worker (memory, the hard time limit) takes the batch's
  transaction with it: only notifications never tried (attempts = 0) are taken as others, and
  a leader on its second attempt or later runs alone, so a good notification spends at most
  one extra attempt for a bad one, and the bad one, once tried, is never batched again.
- Rules that move mail, truncated notifications (a Nylas fetch outside the transaction),
  `message.updated` (coalescing), `message.deleted` and grant events keep their own paths.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from database.models import Account, Event, EventSource, EventStatus, Provider
from database.repositories import classifier as classify_repo
from database.repositories import rules as rules_repo
from database.repositories.accounts import access as accounts_repo
from database.repositories.events import batch as batch_repo
from database.repositories.events.batch import Waiting
from database.repositories.messages import rows as messages_repo
from database.repositories.messages import threads as threads_repo
from services.classify import mail, rules
from services.classify.service import verdicts
from services.events.outcome import Outcome
from services.events.unit_of_work import Job
from services.events.workflows import start_message_chains
from services.nylas.notifications import (
    attachment_values,
    folder_role,
    message_values,
)
from settings import Settings
from worker.inline_chain import LOCAL_ACTIONS, finished_run, insert_finished_runs

log = structlog.get_logger(__name__)

BATCH_TYPE = "message.created"


class _Suspects:
    """Events of a batch that failed, left out of this process's later batches for `ttl_s`.

    Which row of a failed batch was bad is not known; leaving all of them to their own task
    messages for a while costs what those messages cost anyway. Bounded: at most `cap` ids.
    """

    def __init__(self, *, ttl_s: float = 600.0, cap: int = 2048) -> None:
        self.ttl_s, self.cap = ttl_s, cap
        self._until: dict[uuid.UUID, float] = {}

    def add(self, ids: list[uuid.UUID]) -> None:
        now = time.monotonic()
        self._until = {k: t for k, t in self._until.items() if t > now}
        for event_id in ids:
            self._until[event_id] = now + self.ttl_s
        while len(self._until) > self.cap:  # the oldest entries go first (insertion order)
            del self._until[next(iter(self._until))]

    def current(self) -> set[uuid.UUID]:
        now = time.monotonic()
        return {k for k, t in self._until.items() if t > now}


SUSPECTS = _Suspects()


class _LeaderAlone(Exception):
    """The batch cannot include its own leader: it runs alone on the usual path."""


@dataclass
class _Item:
    event: Event | Waiting
    obj: dict[str, Any]
    values: dict[str, Any]
    attachments: list[dict[str, Any]]
    outcome: Outcome | None = None
    chains: list[uuid.UUID] = field(default_factory=list)


def grant_of(payload: dict[str, Any]) -> str | None:
    data = payload.get("data")
    if not isinstance(data, dict):
        return None
    obj = data.get("object") if isinstance(data.get("object"), dict) else {}
    grant = data.get("grant_id") or (obj or {}).get("grant_id")
    return grant if isinstance(grant, str) and grant else None


def batchable(event: Event) -> bool:
    """A `message.created` notification that came with its body (no Nylas fetch needed)."""
    if event.source != EventSource.nylas or event.type != BATCH_TYPE:
        return False
    data = (event.payload or {}).get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    return (
        isinstance(obj, dict)
        and isinstance(obj.get("id"), str)
        and bool(obj["id"])
        and isinstance(obj.get("body"), str)
        and grant_of(event.payload) is not None
    )


def _item(event: Event | Waiting, account: Account) -> _Item:
    """Read one notification (CPU only); raises when it cannot be stored as it is."""
    body = event.payload
    obj = body["data"]["object"]
    if not isinstance(obj.get("id"), str) or not obj["id"] or not isinstance(obj.get("body"), str):
        raise ValueError("not a complete message.created notification")
    version = body.get("time") if isinstance(body.get("time"), int) else None
    values = message_values(obj, account=account, version=version)
    return _Item(event=event, obj=obj, values=values, attachments=attachment_values(obj))


async def process_batch(
    session: AsyncSession,
    *,
    leader: Event,
    task_id: str,
    settings: Settings,
) -> tuple[Outcome, list[Job], list[str]] | None:
    """Store, classify and rule `leader` with its grant's other waiting message.created
    notifications, in the caller's transaction: (the leader's outcome, chains to publish
    after the commit, the task ids of the others' messages). None when the leader takes the
    usual path: nothing else waiting (a lone message costs what it did), no account for the
    grant, or a batch that failed (nothing of it was kept)."""
    size = settings.created_batch
    grant = grant_of(leader.payload)
    if size <= 1 or grant is None:
        return None
    account = await accounts_repo.get_live_by_grant(session, grant)
    if account is None or account.provider != Provider.nylas:
        return None
    if leader.tenant_id is not None and leader.tenant_id != account.tenant_id:
        return None
    if leader.attempts > 1:  # tried before: a batch of its may be what failed (or killed) it
        return None
    taken: list[uuid.UUID] = []
    try:
        async with session.begin_nested():
            done = await _run(
                session,
                leader=leader,
                task_id=task_id,
                account=account,
                settings=settings,
                taken=taken,
            )
    except Exception as exc:  # rolled back to the savepoint: the leader alone, as before
        SUSPECTS.add(taken)
        log.warning("batch_fell_back", error=type(exc).__name__, others=len(taken))
        return None
    if done is None:  # nothing else waiting: the usual path (worker.inline_chain)
        return None
    outcome, jobs, others = done
    leader.tenant_id, leader.account_id = account.tenant_id, account.id
    if others:  # counted in postroom_events_batched_total after the commit (worker.tasks.events)
        outcome.result = {**outcome.result, "batched": len(others)}
    return outcome, jobs, [str(e.current_task_id) for e in others if e.current_task_id]


async def _run(
    session: AsyncSession,
    *,
    leader: Event,
    task_id: str,
    account: Account,
    settings: Settings,
    taken: list[uuid.UUID],
) -> tuple[Outcome, list[Job], list[Event | Waiting]] | None:
    size = settings.created_batch
    grant = grant_of(leader.payload)
    assert grant is not None
    peers = await batch_repo.take_created_peers(
        session,
        grant_id=grant,
        tenant_id=account.tenant_id,
        exclude={leader.id, *SUSPECTS.current()},
        limit=size - 1,
    )
    if not peers:
        return None
    taken += [p.id for p in peers]
    try:
        first = _item(leader, account)
    except Exception as exc:
        raise _LeaderAlone(type(exc).__name__) from exc
    items = [first]
    seen = {first.values["provider_id"]}
    for peer in peers:
        try:
            item = _item(peer, account)
        except Exception as exc:  # left to its own task, which fails it on its own
            log.info("batch_left_out", event_id=str(peer.id), error=type(exc).__name__)
            continue
        # Two notifications about one message: one upsert row each would conflict with itself.
        if item.values["provider_id"] in seen:
            continue
        seen.add(item.values["provider_id"])
        items.append(item)

    await _store(session, account=account, items=items)
    created = [i for i in items if i.outcome and i.outcome.result.get("action") == "created"]
    finished, runs = await _classify_and_rule(session, account=account, items=created)

    jobs: list[Job] = []
    for item in items:
        if item.chains:
            parent = item.event.event() if isinstance(item.event, Waiting) else item.event
            jobs += await start_message_chains(
                session,
                parent=parent,
                tenant_id=account.tenant_id,
                account_id=account.id,
                message_ids=item.chains,
                stale_after_s=settings.outbox_stale_after_s,
            )
    await classify_repo.save_verdicts_and_labels(session, finished)
    await insert_finished_runs(session, runs)
    others = items[1:]
    await batch_repo.finish_peers(
        session,
        leader_id=leader.id,
        leader_task_id=task_id,
        outcomes=[
            {
                "id": i.event.id,
                "status": EventStatus(i.outcome.status),
                "result": i.outcome.result,
                "error": i.outcome.reason,
                "tenant_id": account.tenant_id,
                "account_id": account.id,
            }
            for i in others
            if i.outcome is not None
        ],
    )
    assert first.outcome is not None
    return first.outcome, jobs, [i.event for i in others]


async def _store(session: AsyncSession, *, account: Account, items: list[_Item]) -> None:
    """store_message for every item: folders, threads, messages, attachments, set-based."""
    names = sorted({n for i in items for n in i.values["labels"]})
    folder_ids = await messages_repo.ensure_folders(
        session,
        tenant_id=account.tenant_id,
        account_id=account.id,
        folders=[{"name": n, "provider_id": n, "role": folder_role(n)} for n in names],
    )
    for item in items:
        if item.values["labels"]:
            item.values["folder_id"] = folder_ids[item.values["labels"][0]]
    threads = await threads_repo.provider_threads(session, [i.values for i in items])
    for item, thread in zip(items, threads, strict=True):
        item.values["thread_id"] = thread
    # upsert_many wants one key set per call (a key left out is a column an update keeps);
    # rows in provider id order, so two batches lock shared rows in the same order.
    saved: dict[str, tuple[uuid.UUID, bool]] = {}
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for item in items:
        groups.setdefault(tuple(sorted(item.values)), []).append(item.values)
    for rows in groups.values():
        saved.update(
            await messages_repo.upsert_many(session, sorted(rows, key=lambda r: r["provider_id"]))
        )
    stored = [(i, saved[p]) for i in items if (p := i.values["provider_id"]) in saved]
    await messages_repo.replace_attachments(
        session,
        tenant_id=account.tenant_id,
        message_ids=[mid for _, (mid, _) in stored],
        rows=[{**a, "message_id": mid} for i, (mid, _) in stored for a in i.attachments],
    )
    for item in items:
        got = saved.get(item.values["provider_id"])
        if got is None:
            item.outcome = Outcome.ignored(
                "the message was deleted or a newer state is stored", account
            )
            continue
        item.outcome = Outcome.stored(*got, account)


async def _classify_and_rule(
    session: AsyncSession, *, account: Account, items: list[_Item]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """worker.inline_chain for every new message: (verdict rows, finished runs). A message
    with a matching rule that moves mail goes on the item's `chains`, as it does there."""
    if not items:
        return [], []
    tenant = account.tenant_id
    ids = [m for i in items for m in (i.outcome.message_ids if i.outcome else [])]
    messages = await classify_repo.get_messages(session, tenant_id=tenant, message_ids=ids)
    for message in messages.values():
        # Read-only here, as in inline_chain: the verdicts and labels are written below.
        session.expunge(message)
    names = await classify_repo.attachment_names_many(session, list(messages))
    ready = []
    for item in items:
        mid = item.outcome.message_ids[0] if item.outcome else None
        if mid in messages:
            ready.append((item, messages[mid]))
        elif mid is not None:  # as inline_chain: the steps find out what happened to it
            item.chains = [mid]
    found = await verdicts(
        session,
        tenant_id=tenant,
        docs=[mail.from_message(m, names.get(m.id, [])) for _, m in ready],
    )
    enabled = await rules_repo.list_for_account(
        session, tenant_id=tenant, account_id=account.id, enabled_only=True
    )
    finished: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    for (item, message), verdict in zip(ready, found, strict=True):
        for key, column in (
            ("is_spam", "is_spam"),
            ("spam_score", "spam_score"),
            ("indicators", "spam_indicators"),
            ("category", "category"),
        ):
            set_committed_value(message, column, verdict[key])
        matching = [r for r in enabled if rules.matches(r.condition, message)]
        if any(r.action.get("type") not in LOCAL_ACTIONS for r in matching):
            item.chains = [message.id]
            continue
        labels = list(message.labels or [])
        applied = []
        for rule in matching:  # rules.apply_label, for many messages at once
            label = rule.action["label"]
            if label not in labels:
                labels.append(label)
                applied.append(f"label:{label}")
        finished.append(
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
        runs.append(
            finished_run(
                parent=item.event,
                account=account,
                mid=message.id,
                classified=verdict,
                outcome=outcome,
            )
        )
    return finished, runs
