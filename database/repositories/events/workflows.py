"""Workflow runs on the event row: step states, handing the event on to the next step."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Event, EventStatus

_t = Event.__table__  # type: ignore[attr-defined]
_now = sa.func.now()


def _interval(seconds: float) -> Any:
    return sa.func.make_interval(0, 0, 0, 0, 0, 0, seconds)


def _append(column: Any, item: Any) -> Any:
    return column.op("||")(sa.func.jsonb_build_array(sa.cast(item, column.type)))


async def set_steps(
    session: AsyncSession, *, event_id: uuid.UUID, task_id: str, steps: list[dict[str, Any]]
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
    steps: list[dict[str, Any]],
    next_task_name: str,
    next_task_id: str,
    result: dict[str, Any],
    stale_after_s: float,
) -> bool:
    """One step finished: queue the event for the next step's task, in the step's transaction.

    The event's task_name becomes the next step's task, so the outbox sweeper (a lost publish)
    and a replay both run the step that is due, never the chain from its start.
    """
    now = datetime.now(UTC)
    entry = {
        "task_id": task_id,
        "started_at": event.started_at.isoformat() if event.started_at else None,
        "finished_at": now.isoformat(),
        "duration_ms": round((now - event.started_at).total_seconds() * 1000, 1)
        if event.started_at
        else None,
        "outcome": "step_succeeded",
        "error": None,
    }
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
