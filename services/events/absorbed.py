"""Events one attempt absorbed (database.repositories.events.lifecycle.absorb): the engine's
to keep alive and to give back.

A run that does other waiting events' work in its own transaction (a batch of message.created,
coalesced message.updated) absorbs them first, in a short transaction of its own, by status and
lease like any claim. For as long as the attempt runs, the engine renews their lease with its
own (worker.lease); when the attempt ends, it gives back whatever the work did not finish
(lifecycle.release_absorbed): after a failure, a lost claim or a commit, alike, so nothing
absorbed waits for its lease to run out unless the worker itself died.
"""

from __future__ import annotations

import contextlib
import contextvars
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from database.engine import Database
from database.models import Event, EventStatus
from database.repositories.events import lifecycle
from services.events.unit_of_work import Job


@dataclass(frozen=True)
class Absorbed:
    ids: tuple[uuid.UUID, ...]
    absorbed_at: datetime


@dataclass
class Scope:
    """One attempt's absorptions, and the task messages of what it gave back (published by
    the engine once the attempt is over: each release committed on its own)."""

    held: list[Absorbed] = field(default_factory=list)
    released: list[Job] = field(default_factory=list)


_scope: contextvars.ContextVar[Scope | None] = contextvars.ContextVar(
    "postroom_absorbed", default=None
)


@contextlib.contextmanager
def attempt() -> Iterator[Scope]:
    """The engine's scope of one attempt: what the work absorbs is listed here."""
    scope = Scope()
    token = _scope.set(scope)
    try:
        yield scope
    finally:
        _scope.reset(token)


async def absorb(
    db: Database,
    *,
    leader: Event,
    ids: Sequence[uuid.UUID],
    lease_s: float,
    count_attempt: bool,
    statuses: Sequence[EventStatus] = (EventStatus.received, EventStatus.queued),
) -> tuple[Absorbed | None, list[Any]]:
    """Absorb `ids` for `leader`'s attempt in a transaction of its own (committed before the
    work), listed for the engine. (the absorption, the rows taken) or (None, [])."""
    if not ids:
        return None, []
    async with db.transaction() as s:
        at, rows = await lifecycle.absorb(
            s,
            leader=leader,
            ids=ids,
            lease_s=lease_s,
            count_attempt=count_attempt,
            statuses=statuses,
        )
    if at is None:
        return None, []
    taken = Absorbed(tuple(r["id"] for r in rows), at)
    scope = _scope.get()
    if scope is not None:
        scope.held.append(taken)
    return taken, rows


async def release(db: Database, taken: Sequence[Absorbed], *, stale_after_s: float) -> int:
    """Give back what is still absorbed (not finished, not taken over): queued under new task
    ids, whose messages the engine publishes when the attempt is over. How many."""
    back: list[Job] = []
    for one in taken:
        async with db.transaction() as s:
            events = await lifecycle.release_absorbed(
                s, ids=list(one.ids), absorbed_at=one.absorbed_at, stale_after_s=stale_after_s
            )
        back += [
            Job(e.task_name, e.id, str(e.current_task_id), dict(e.task_kwargs or {}), e.request_id)
            for e in events
        ]
    scope = _scope.get()
    if scope is not None:
        scope.released += back
    return len(back)
