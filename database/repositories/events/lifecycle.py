"""The event lifecycle: every write of an event's status, history and steps, in one place.

The engine (worker.execution) claims an event (`claim`), records how an attempt ended
(`finish`, `continue_with`, `hand_on` for a workflow's next step) and shows a run's steps
(`set_steps`); a worker that does the work of other waiting events in its own transaction (a
batch of message.created, coalesced message.updated) ends them with `finish_absorbed`; the
outbox sweeper re-leases (`take_due`, `release_due`), a replay re-queues (`prepare_replay`),
a cancel ends one that no worker took (`cancel`), and a run done inline is inserted finished
(`insert_finished`). Nothing else writes those columns (scripts/check_imports.py:
lifecycle-writes-only-here), so each transition and the one shape of a history entry
(`history_entry`, a `HistoryEntry`) and of a step (`Step`) can be read here.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NotRequired, TypedDict

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from database.models import Event, EventStatus
from database.repositories.chunks import chunked, width

_t = Event.__table__  # type: ignore[attr-defined]
_now = sa.func.now()
Executor = AsyncSession | AsyncConnection

UNFINISHED = (
    EventStatus.received,
    EventStatus.queued,
    EventStatus.processing,
    EventStatus.retrying,
)


def _interval(seconds: float) -> Any:
    return sa.func.make_interval(0, 0, 0, 0, 0, 0, seconds)


def _republished(stale_after_s: float) -> dict[str, Any]:
    """An event handed to a new task message: "<event id>.<n>" (unique, readable in Flower),
    with the lease of a queued event."""
    new_task_id = sa.cast(_t.c.id, sa.String) + "." + sa.cast(_t.c.publish_count + 1, sa.String)
    return {
        "current_task_id": new_task_id,
        "task_ids": _t.c.task_ids.op("||")(sa.func.jsonb_build_array(new_task_id)),
        "publish_count": _t.c.publish_count + 1,
        "due_at": _now + _interval(stale_after_s),
        "updated_at": _now,
    }


def _append(column: Any, item: Any) -> Any:
    return column.op("||")(sa.func.jsonb_build_array(sa.cast(item, column.type)))


class StepState(enum.StrEnum):
    """A workflow step's state in the event's `steps` column."""

    pending = "pending"
    running = "running"
    retrying = "retrying"
    succeeded = "succeeded"
    failed = "failed"
    dead = "dead"
    skipped = "skipped"
    ignored = "ignored"


class Step(TypedDict):
    """One step of a run's plan, as the event's `steps` column holds it."""

    name: str
    task: str
    state: str  # a StepState (ignored/failed also come from an Outcome's status)
    attempts: NotRequired[int]
    attempts_before: NotRequired[int]
    task_id: NotRequired[str | None]
    error: NotRequired[str | None]
    result: NotRequired[dict[str, Any]]


class HistoryEntry(TypedDict):
    """One entry of an event's `history`: an attempt, a part, a step, a replay, a cancel."""

    task_id: str | None
    started_at: str | None
    finished_at: str
    duration_ms: float | None
    outcome: str  # an EventStatus, or continued / step_succeeded / replayed / coalesced
    error: str | None
    batched_into: NotRequired[str]  # done in another event's batch (services.nylas.batch)
    attempts_before: NotRequired[int]  # a replay: where the new retry budget starts


def history_entry(
    *,
    task_id: str | None,
    outcome: str,
    started_at: datetime | None = None,
    error: str | None = None,
    at_once: bool = False,
    batched_into: str | None = None,
) -> HistoryEntry:
    """The one shape of a history entry. `at_once`: started and finished now (work done in
    another event's transaction); no start otherwise shows none, nor a duration."""
    now = datetime.now(UTC)
    entry: HistoryEntry = {
        "task_id": task_id,
        "started_at": now.isoformat()
        if at_once
        else started_at.isoformat()
        if started_at
        else None,
        "finished_at": now.isoformat(),
        "duration_ms": round((now - started_at).total_seconds() * 1000, 1)
        if started_at and not at_once
        else None,
        "outcome": str(outcome),
        "error": error,
    }
    if batched_into is not None:
        entry["batched_into"] = batched_into
    return entry


async def claim(
    session: AsyncSession,
    *,
    event_id: uuid.UUID,
    task_id: str,
    lease_s: float,
    redelivered: bool = False,
) -> Event | None:
    """Take the event for this task run, or None when another run owns it or it has finished.

    A fresh event may be taken by any copy (the first wins); a retrying event only by the
    scheduled retry (same task id) or once its lease is over; a processing event only when
    its lease is over, or when the broker redelivers the same task id because the worker
    that held it was lost (task_reject_on_worker_lost).
    """
    lease_over = _t.c.due_at < _now
    same_task = _t.c.current_task_id == task_id
    stmt = (
        sa.update(_t)
        .where(
            _t.c.id == event_id,
            sa.or_(
                _t.c.status.in_([EventStatus.received, EventStatus.queued]),
                sa.and_(
                    _t.c.status == EventStatus.retrying,
                    sa.or_(same_task, lease_over),
                ),
                sa.and_(
                    _t.c.status == EventStatus.processing,
                    sa.or_(
                        lease_over,
                        sa.and_(same_task, sa.true() if redelivered else sa.false()),
                        # The next part of a job cut into parts (continue_with): handed to this
                        # task id, not started yet; its first copy takes it.
                        sa.and_(same_task, _t.c.started_at.is_(None)),
                    ),
                ),
            ),
        )
        .values(
            status=EventStatus.processing,
            attempts=_t.c.attempts + 1,
            current_task_id=task_id,
            task_ids=sa.case(
                (_t.c.task_ids.contains([task_id]), _t.c.task_ids),
                else_=_t.c.task_ids.op("||")(sa.func.jsonb_build_array(task_id)),
            ),
            started_at=_now,
            due_at=_now + _interval(lease_s),
            updated_at=_now,
        )
        .returning(*_t.c)
    )
    row = (await session.execute(stmt)).mappings().one_or_none()
    return Event(**row) if row is not None else None


async def finish(
    session: AsyncSession,
    *,
    event: Event,
    task_id: str,
    status: EventStatus,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    tenant_id: uuid.UUID | None = None,
    account_id: uuid.UUID | None = None,
    retry_in_s: float | None = None,
) -> bool:
    """Record the end of one attempt; False when this run no longer owns the event."""
    entry = history_entry(task_id=task_id, started_at=event.started_at, outcome=status, error=error)
    values: dict[str, Any] = {
        "status": status,
        "history": _t.c.history.op("||")(
            sa.func.jsonb_build_array(sa.cast(entry, _t.c.history.type))
        ),
        "updated_at": _now,
        "last_error": error,
    }
    if result is not None:
        values["result"] = result
    if tenant_id is not None:
        values["tenant_id"] = tenant_id
    if account_id is not None:
        values["account_id"] = account_id
    if status == EventStatus.retrying:
        # The sweeper may publish again only if the scheduled retry never shows up.
        values["due_at"] = _now + _interval((retry_in_s or 0) + 300)
    else:
        values["due_at"] = None
        values["finished_at"] = _now
    stmt = (
        sa.update(_t)
        .where(
            _t.c.id == event.id,
            _t.c.status == EventStatus.processing,
            _t.c.current_task_id == task_id,
        )
        .values(**values)
        .returning(_t.c.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none() is not None


async def continue_with(
    session: AsyncSession,
    *,
    event: Event,
    task_id: str,
    next_task_id: str,
    result: dict[str, Any],
    stale_after_s: float,
) -> bool:
    """One part of a job cut into parts is done: hand the event to its next part's task id.

    The work wrote its progress (set_progress). The event stays `processing` (the job runs
    until its last part), with no start time until
    the next part claims it (claim), and the lease of a queued event: if that publish is lost,
    the outbox sweeper publishes the event again. False when this run no longer owns it.
    """
    entry = history_entry(task_id=task_id, started_at=event.started_at, outcome="continued")
    stmt = (
        sa.update(_t)
        .where(
            _t.c.id == event.id,
            _t.c.status == EventStatus.processing,
            _t.c.current_task_id == task_id,
        )
        .values(
            current_task_id=next_task_id,
            task_ids=_t.c.task_ids.op("||")(sa.func.jsonb_build_array(next_task_id)),
            history=_t.c.history.op("||")(
                sa.func.jsonb_build_array(sa.cast(entry, _t.c.history.type))
            ),
            publish_count=_t.c.publish_count + 1,
            result=result,
            # A part is not an attempt: the next part's claim counts it again, so a job of 50
            # parts keeps its whole retry budget for real failures (execution.retries_used).
            attempts=_t.c.attempts - 1,
            last_error=None,
            started_at=None,
            due_at=_now + _interval(stale_after_s),
            updated_at=_now,
        )
        .returning(_t.c.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none() is not None


async def uncount_attempt(session: AsyncSession, *, event_id: uuid.UUID) -> None:
    """Take back the attempt the last claim counted: that run only waited (an IMAP slot)."""
    await session.execute(
        sa.update(_t)
        .where(_t.c.id == event_id, _t.c.attempts > 0)
        .values(attempts=_t.c.attempts - 1)
    )


async def take_due(session: AsyncSession, *, limit: int, stale_after_s: float) -> list[Event]:
    """Lock and return unfinished events whose lease ran out, pushing their lease forward.

    SKIP LOCKED lets two sweepers run without publishing the same event twice in one round.
    """
    due = (
        sa.select(_t.c.id)
        .where(_t.c.status.in_(UNFINISHED), _t.c.due_at < _now)
        .order_by(_t.c.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    stmt = (
        sa.update(_t)
        .where(_t.c.id.in_(due))
        .values(
            status=sa.case(
                (_t.c.status == EventStatus.received, EventStatus.queued),
                # A job's next part not claimed in time (continue_with): the job is still
                # running, so it stays `processing`, handed to the new task id.
                (
                    sa.and_(_t.c.status == EventStatus.processing, _t.c.started_at.is_(None)),
                    EventStatus.processing,
                ),
                (_t.c.status == EventStatus.processing, EventStatus.queued),
                else_=_t.c.status,
            ),
            **_republished(stale_after_s),
        )
        .returning(*_t.c)
    )
    rows = (await session.execute(stmt)).mappings().all()
    return [Event(**r) for r in rows]


async def release_due(session: AsyncSession, *, limit: int, stale_after_s: float) -> list[Event]:
    """Turn scheduled events whose time has come into queued ones and return them to publish.

    Only rows still `scheduled` change (a cancel that got there first wins), and SKIP LOCKED
    keeps two sweepers from releasing the same event. A released event gets the usual lease:
    if its publish is lost, take_due() publishes it again. Its task id stays the one the
    API answered with.
    """
    due = (
        sa.select(_t.c.id)
        .where(_t.c.status == EventStatus.scheduled, _t.c.not_before <= _now)
        .order_by(_t.c.not_before)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    stmt = (
        sa.update(_t)
        .where(_t.c.id.in_(due), _t.c.status == EventStatus.scheduled)
        .values(
            status=EventStatus.queued,
            due_at=_now + _interval(stale_after_s),
            updated_at=_now,
        )
        .returning(*_t.c)
    )
    rows = (await session.execute(stmt)).mappings().all()
    return [Event(**r) for r in rows]


async def prepare_replay(session: AsyncSession, *, event_id: uuid.UUID, task_id: str) -> bool:
    """Turn a finished event back into a queued one for a new attempt; history is kept.

    Only a finished event: replaying one that is still running would run it twice. The
    history gets a `replayed` entry holding the attempts so far, which is where the new run's
    retry budget starts (worker.execution.retries_used).
    """
    entry = history_entry(task_id=task_id, outcome="replayed")
    marker = sa.cast(entry, _t.c.history.type).op("||")(
        sa.func.jsonb_build_object("attempts_before", _t.c.attempts)
    )
    stmt = (
        sa.update(_t)
        .where(_t.c.id == event_id, _t.c.status.in_(EventStatus.finished()))
        .values(
            status=EventStatus.queued,
            history=_t.c.history.op("||")(sa.func.jsonb_build_array(marker)),
            current_task_id=task_id,
            task_ids=_t.c.task_ids.op("||")(sa.func.jsonb_build_array(task_id)),
            publish_count=_t.c.publish_count + 1,
            finished_at=None,
            due_at=_now + _interval(60),
            updated_at=_now,
        )
        .returning(_t.c.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none() is not None


async def set_steps(
    session: AsyncSession, *, event_id: uuid.UUID, task_id: str, steps: list[Step]
) -> bool:
    """Show the steps' states; only the run that owns the event may write them."""
    stmt = (
        sa.update(_t)
        .where(_t.c.id == event_id, _t.c.current_task_id == task_id)
        .values(steps=steps, updated_at=_now)
        .returning(_t.c.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none() is not None


async def hand_on(
    session: AsyncSession,
    *,
    event: Event,
    task_id: str,
    steps: list[Step],
    next_task_name: str,
    next_task_id: str,
    result: dict[str, Any],
    stale_after_s: float,
) -> bool:
    """One step finished: queue the event for the next step's task, in the step's transaction.

    The event's task_name becomes the next step's task, so the outbox sweeper (a lost publish)
    and a replay both run the step that is due, never the chain from its start.
    """
    entry = history_entry(task_id=task_id, started_at=event.started_at, outcome="step_succeeded")
    stmt = (
        sa.update(_t)
        .where(
            _t.c.id == event.id,
            _t.c.status == EventStatus.processing,
            _t.c.current_task_id == task_id,
        )
        .values(
            status=EventStatus.queued,
            steps=steps,
            task_name=next_task_name,
            current_task_id=next_task_id,
            task_ids=_t.c.task_ids.op("||")(sa.func.jsonb_build_array(next_task_id)),
            history=_append(_t.c.history, entry),
            publish_count=_t.c.publish_count + 1,
            result=result,
            last_error=None,
            due_at=_now + _interval(stale_after_s),
            updated_at=_now,
        )
        .returning(_t.c.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none() is not None


async def cancel(
    session: AsyncSession, *, tenant_id: uuid.UUID, event_id: uuid.UUID
) -> Event | None:
    """Mark the tenant's event cancelled if it is still waiting; the row, or None otherwise.

    One conditional UPDATE: the worker's claim (events.claim) is an UPDATE on the same row, so
    whichever commits first wins and the other finds a status it does not accept. A task
    message still in the broker is then refused by its claim and finishes without effect.
    """
    entry = history_entry(task_id=None, outcome=EventStatus.cancelled)
    stmt = (
        sa.update(_t)
        .where(
            _t.c.id == event_id,
            _t.c.tenant_id == tenant_id,
            _t.c.status.in_(EventStatus.cancellable()),
        )
        .values(
            status=EventStatus.cancelled,
            history=_t.c.history.op("||")(
                sa.func.jsonb_build_array(sa.cast(entry, _t.c.history.type))
            ),
            # No lease: the outbox sweeper only looks at unfinished events anyway.
            due_at=None,
            finished_at=_now,
            updated_at=_now,
        )
        .returning(*_t.c)
    )
    row = (await session.execute(stmt)).mappings().one_or_none()
    return Event(**row) if row is not None else None


_FINISH = (
    sa.update(_t)
    .where(
        _t.c.id == sa.bindparam("b_id"),
        # Only while still absorbed by this run (absorb): a takeover claim moves started_at.
        _t.c.status == EventStatus.processing,
        _t.c.started_at == sa.bindparam("b_absorbed_at"),
    )
    .values(
        status=sa.bindparam("b_status"),
        result=sa.bindparam("b_result", type_=_t.c.result.type),
        last_error=sa.bindparam("b_error"),
        tenant_id=sa.bindparam("b_tenant_id"),
        account_id=sa.bindparam("b_account_id"),
        history=_t.c.history.op("||")(
            sa.func.jsonb_build_array(sa.bindparam("b_entry", type_=_t.c.history.type))
        ),
        finished_at=sa.func.now(),
        due_at=None,
        updated_at=sa.func.now(),
    )
)


async def absorb(
    session: AsyncSession,
    *,
    leader: Event,
    ids: Sequence[uuid.UUID],
    lease_s: float,
    count_attempt: bool,
    statuses: Sequence[EventStatus] = (EventStatus.received, EventStatus.queued),
) -> tuple[datetime | None, list[Any]]:
    """Take waiting events whose work `leader`'s run will do in its own transaction, by status
    and lease like every claim: they become `processing` with a lease (their own task
    messages' claims then find them taken), started at one time that is this absorption's
    token (`absorbed_at`): finish_absorbed, finish_coalesced, renew_absorbed and
    release_absorbed touch them only while it still stands, and a claim that takes one over
    after its lease ran out (a dead leader) moves it. Commit this before the work: no row lock
    is held across it. `count_attempt`: the absorption counts as one of their attempts (a
    batch takes only events never tried, so one that was in a failed batch is never batched
    again). (absorbed_at, the taken rows); rows another run holds or took are skipped."""
    if not ids:
        return None, []
    free = (
        sa.select(_t.c.id)
        .where(_t.c.id.in_(list(ids)), _t.c.status.in_(list(statuses)), _t.c.id != leader.id)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    values: dict[str, Any] = {
        "status": EventStatus.processing,
        "started_at": _now,
        "due_at": _now + _interval(lease_s),
        "updated_at": _now,
    }
    if count_attempt:
        values["attempts"] = _t.c.attempts + 1
    stmt = sa.update(_t).where(_t.c.id.in_(free)).values(**values).returning(*_t.c)
    rows = list((await session.execute(stmt)).mappings().all())
    return (rows[0]["started_at"] if rows else None), rows


async def renew_absorbed(
    session: Executor, *, ids: Sequence[uuid.UUID], absorbed_at: datetime, lease_s: float
) -> None:
    """Push the lease of events this run absorbed, while it works (worker.lease)."""
    await session.execute(
        sa.update(_t).where(*_absorbed(ids, absorbed_at)).values(due_at=_now + _interval(lease_s))
    )


async def release_absorbed(
    session: AsyncSession,
    *,
    ids: Sequence[uuid.UUID],
    absorbed_at: datetime,
    stale_after_s: float,
) -> list[Event]:
    """Give back absorbed events whose work was not done (a failed batch, a failed or lost
    leader, one left out): `queued` under a new task id, as the outbox sweeper re-queues a
    dead claim (take_due), for the caller to publish after this commits (their own task
    messages may have been refused while they were absorbed). Finished ones and ones taken
    over are left alone."""
    stmt = (
        sa.update(_t)
        .where(*_absorbed(ids, absorbed_at))
        .values(status=EventStatus.queued, **_republished(stale_after_s))
        .returning(*_t.c)
    )
    return [Event(**r) for r in (await session.execute(stmt)).mappings().all()]


async def still_absorbed(
    session: AsyncSession, *, ids: Sequence[uuid.UUID], absorbed_at: datetime
) -> set[uuid.UUID]:
    """Which of them this absorption still holds, locked until the caller's transaction ends:
    what the work ends at its close (finish_absorbed, finish_coalesced)."""
    stmt = sa.select(_t.c.id).where(*_absorbed(ids, absorbed_at)).with_for_update()
    return set((await session.execute(stmt)).scalars())


def _absorbed(ids: Sequence[uuid.UUID], absorbed_at: datetime) -> list[Any]:
    return [
        _t.c.id.in_(list(ids)),
        _t.c.status == EventStatus.processing,
        _t.c.started_at == absorbed_at,
    ]


async def finish_absorbed(
    session: AsyncSession,
    *,
    leader_id: uuid.UUID,
    leader_task_id: str,
    absorbed_at: datetime,
    outcomes: list[dict[str, Any]],
) -> None:
    """End events whose work `leader_id`'s run did in its own transaction (a batch of
    message.created, services.nylas.batch), in that transaction: one executemany; each row has id,
    status, result, error, tenant_id, account_id. Their history says which task did the work,
    in whose batch. Only events still absorbed (absorb) change: the caller checked which
    with still_absorbed."""
    if not outcomes:
        return
    params = [
        {
            "b_absorbed_at": absorbed_at,
            "b_id": o["id"],
            "b_status": o["status"],
            "b_result": o["result"],
            "b_error": o["error"],
            "b_tenant_id": o["tenant_id"],
            "b_account_id": o["account_id"],
            "b_entry": history_entry(
                task_id=leader_task_id,
                outcome=o["status"],
                error=o["error"],
                at_once=True,
                batched_into=str(leader_id),
            ),
        }
        for o in outcomes
    ]
    await session.execute(_FINISH, params)


async def insert_finished(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Insert finished runs (finished_run): one statement, the rows as its executemany
    parameters (sent as multi-row INSERTs from one cached compilation)."""
    if not rows:
        return
    now = sa.func.now()
    stmt = (
        insert(_t)
        .values(received_at=now, started_at=now, finished_at=now, updated_at=now)
        # A redelivered notification's second run finds the first's row and starts nothing.
        .on_conflict_do_nothing(index_elements=["source", "external_id"])
    )
    for part in chunked(rows, width(rows) + 4):
        await session.execute(stmt, list(part))


_COALESCED = sa.text(
    """
UPDATE event SET
  status = 'succeeded',
  result = jsonb_build_object('status', 'coalesced', 'coalesced_into', CAST(:into AS text)),
  tenant_id = coalesce(CAST(:tenant_id AS uuid), tenant_id),
  account_id = coalesce(CAST(:account_id AS uuid), account_id),
  history = history || jsonb_build_array(CAST(:entry AS jsonb)),
  due_at = NULL, finished_at = now(), updated_at = now()
WHERE id = ANY(:ids) AND status = 'processing' AND started_at = :absorbed_at
"""
).bindparams(sa.bindparam("entry", type_=_t.c.history.type))


async def finish_coalesced(
    session: AsyncSession,
    *,
    ids: list[uuid.UUID],
    into: uuid.UUID,
    absorbed_at: datetime,
    tenant_id: uuid.UUID | None,
    account_id: uuid.UUID | None,
) -> None:
    """End notifications `into`'s run absorbed and whose newest state it applied (services.
    nylas.coalesce), in the transaction of that work."""
    if not ids:
        return
    await session.execute(
        _COALESCED,
        {
            "ids": ids,
            "into": str(into),
            "absorbed_at": absorbed_at,
            "tenant_id": str(tenant_id) if tenant_id else None,
            "account_id": str(account_id) if account_id else None,
            "entry": history_entry(task_id=None, outcome="coalesced"),
        },
    )
