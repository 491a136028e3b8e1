"""A process task for a `message.created` also does its grant's other waiting ones (a batch).

Per message, the drain of a burst of webhooks was one task, two transactions and 15 SQL
statements, each a round trip (docs/benchmarks.md "Event drain"). Here the task that claimed
event E absorbs up to POSTROOM_CREATED_BATCH - 1 more `message.created` notifications of the
same grant that no worker has taken yet (newest first; services.events.absorbed: by status and
lease, in a short transaction of their own, like any claim) and stores, classifies and rules
all of them in E's transaction with set-based statements: one folder upsert, one thread
insert, one multi-row message upsert, one read of the tenant's token counts, one
verdict-and-labels executemany, one insert of the finished `classify-message` runs, one update
ending the others. About a dozen statements for the batch instead of 15 a message.

What stays as it was:
- Exactly once. The others are `processing` under E's lease (renewed with E's claim) while E
  works, so their own task messages find them taken; they commit `succeeded` with E's
  transaction (their history names E's task) if E still holds them then. On a failure the
  engine gives them back at once (`queued`, due now: their own messages, or the outbox
  sweeper, run them); if E's worker dies, their lease runs out and the sweeper publishes them.
  No row lock is held across the work.
- Fairness. Only E's grant's (so its tenant's) notifications, at most a batch of them: a
  tenant's backlog is worked off faster, and never at another tenant's turn.
- A bad notification. The batch runs in a savepoint: if one of its statements fails (a row
  PostgreSQL refuses), the savepoint is rolled back, the others are given back at once and E
  runs alone on the usual path; the bad one retries and dead-letters on its own. Absorbing
  counts an attempt, and only notifications never tried (attempts = 0) are absorbed: no
  notification of a failed batch is batched again, by any worker, so one bad row costs one
  failed batch, not one per leader (an engine rule; there is no per-process quarantine). One
  that fails while read (no id, an address list of the wrong shape) is left out before
  anything is written and given back after the commit. A leader on its second attempt or
  later runs alone, so a good notification spends at most one extra attempt for a bad one.
- Rules that move mail, truncated notifications (a Nylas fetch outside the transaction),
  `message.updated` (coalescing), `message.deleted` and grant events keep their own paths.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database
from database.models import Account, Event, EventSource, EventStatus, Provider
from database.repositories.accounts import access as accounts_repo
from database.repositories.events import batch as batch_repo
from database.repositories.events import lifecycle
from database.repositories.events.batch import Waiting
from services.classify import inline
from services.events import absorbed
from services.events.outcome import Outcome
from services.events.unit_of_work import Job
from services.events.workflows import start_message_chains
from services.nylas.store import Incoming, incoming, store_messages
from services.nylas.values import grant_of
from settings import Settings

log = structlog.get_logger(__name__)

BATCH_TYPE = "message.created"


class _LeaderAlone(Exception):
    """The batch cannot include its own leader: it runs alone on the usual path."""


class _TakenOver(Exception):
    """An absorbed notification's lease ran out and another run took it: the batch is undone."""


@dataclass
class _Item:
    event: Event | Waiting
    values: dict[str, Any]
    attachments: list[dict[str, Any]]
    outcome: Outcome | None = None
    chains: list[uuid.UUID] = field(default_factory=list)


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
    message = incoming(obj, account=account, version=version)
    return _Item(event=event, values=message.values, attachments=message.attachments)


async def process_batch(
    session: AsyncSession,
    *,
    leader: Event,
    task_id: str,
    settings: Settings,
    db: Database,
) -> tuple[Outcome, list[Job], list[str]] | None:
    """Store, classify and rule `leader` with its grant's other waiting message.created
    notifications, in the caller's transaction: (the leader's outcome, chains to publish
    after the commit, the task ids of the others' messages). None when the leader takes the
    usual path: nothing else waiting (a lone message costs what it did), no account for the
    grant, or a batch that failed (nothing of it was kept, the others went back at once)."""
    size = settings.created_batch
    grant = grant_of(leader.payload)
    if size <= 1 or grant is None:
        return None
    if leader.attempts > 1:  # tried before: a batch of its may be what failed (or killed) it
        return None
    # Read in short transactions of their own: `session` stays unused until the others are
    # absorbed (committed), so this attempt never holds two connections of its process.
    async with db.transaction() as s:
        account = await accounts_repo.get_live_by_grant(s, grant)
        if account is None or account.provider != Provider.nylas:
            return None
        if leader.tenant_id is not None and leader.tenant_id != account.tenant_id:
            return None
        ids = await batch_repo.created_peer_ids(
            s, grant_id=grant, tenant_id=account.tenant_id, exclude={leader.id}, limit=size - 1
        )
    taken, rows = await absorbed.absorb(
        db, leader=leader, ids=ids, lease_s=settings.claim_lease_s, count_attempt=True
    )
    if taken is None:  # nothing else waiting: the usual path (services.classify.inline)
        return None
    order = {peer: i for i, peer in enumerate(ids)}  # newest first, as found
    peers = [Waiting.of(r) for r in sorted(rows, key=lambda r: order[r["id"]])]
    try:
        async with session.begin_nested():
            outcome, jobs, others = await _run(
                session,
                leader=leader,
                task_id=task_id,
                account=account,
                settings=settings,
                peers=peers,
                absorbed_at=taken.absorbed_at,
            )
    except Exception as exc:  # rolled back to the savepoint: the leader alone, as before
        # Given back now, for their own task messages; the absorption counted an attempt, so
        # none of them is batched again (a bad row costs one failed batch, not one per leader).
        await absorbed.release(db, [taken], stale_after_s=settings.outbox_stale_after_s)
        log.warning("batch_fell_back", error=type(exc).__name__, others=len(peers))
        return None
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
    peers: list[Waiting],
    absorbed_at: datetime,
) -> tuple[Outcome, list[Job], list[Event | Waiting]]:
    try:
        first = _item(leader, account)
    except Exception as exc:
        raise _LeaderAlone(type(exc).__name__) from exc
    items = [first]
    seen = {first.values["provider_id"]}
    for peer in peers:
        try:
            item = _item(peer, account)
        except Exception as exc:  # given back after the commit, to fail on its own
            log.info("batch_left_out", event_id=str(peer.id), error=type(exc).__name__)
            continue
        # Two notifications about one message: one upsert row each would conflict with itself.
        if item.values["provider_id"] in seen:
            continue
        seen.add(item.values["provider_id"])
        items.append(item)

    await _store(session, account=account, items=items)
    created = [i for i in items if i.outcome and i.outcome.result.get("action") == "created"]
    decided = await _classify_and_rule(session, account=account, items=created)

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
    await inline.record(session, decided, tenant_id=account.tenant_id)
    others = items[1:]
    # Still ours (a lease that ran out lets another run take one over): locked from here to
    # the commit, which is the end of the work.
    held = await lifecycle.still_absorbed(
        session, ids=[i.event.id for i in others], absorbed_at=absorbed_at
    )
    if len(held) < len(others):
        raise _TakenOver(f"{len(others) - len(held)} of the batch were taken over")
    await lifecycle.finish_absorbed(
        session,
        leader_id=leader.id,
        leader_task_id=task_id,
        absorbed_at=absorbed_at,
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
    """Store every item (services.nylas.store, the one set-based path) and set its outcome."""
    saved = await store_messages(
        session, account=account, messages=[Incoming(i.values, i.attachments) for i in items]
    )
    for item, got in zip(items, saved, strict=True):
        if got is None:
            item.outcome = Outcome.ignored(
                "the message was deleted or a newer state is stored", account
            )
            continue
        item.outcome = Outcome.stored(*got, account)


async def _classify_and_rule(
    session: AsyncSession, *, account: Account, items: list[_Item]
) -> inline.Decided:
    """The inline run for every new message (services.classify.inline); a message that needs
    the step tasks goes on its item's `chains`."""
    new = [(i, i.outcome.message_ids[0]) for i in items if i.outcome and i.outcome.message_ids]
    done = await inline.decide(session, account=account, new=[(i.event, m) for i, m in new])
    for n in done.through_steps:
        item, mid = new[n]
        item.chains = [mid]
    return done
