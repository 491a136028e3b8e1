"""The outbox sweeper: publish again every unfinished event whose lease ran out, and
release scheduled sends whose `send_at` has come.

Covers a broker that was down at publish time, a Redis restart that lost its queues, a
retry message that never came back and a worker that died holding a claim. A scheduled send
waits in PostgreSQL, not in the broker: a countdown message would be lost with Redis, so
each sweep (every `outbox_sweep_interval_s`) releases what is due.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from database.engine import Database
from database.repositories.events import rows as events_repo
from database.repositories.oauth import states as states_repo
from services.events.unit_of_work import Job

Publish = Callable[..., bool]

log = structlog.get_logger(__name__)


@dataclass
class SweepResult:
    found: int
    published: int


def _publish_all(events: list[Any], publish: Publish) -> int:
    """Publish in order; stop at the first failure (the broker is away, the rest would fail
    the same way). Those not published stay due for a later round."""
    published = 0
    for event in events:
        task_id = event.current_task_id or str(uuid.uuid4())
        kwargs = dict(event.task_kwargs or {})
        ok = publish(**Job(event.task_name, event.id, task_id, kwargs, event.request_id).fields())
        if not ok:
            break
        published += 1
    return published


async def sweep(
    db: Database, *, publish: Publish, stale_after_s: float, batch: int = 500
) -> SweepResult:
    async with db.transaction() as session:
        released = await events_repo.release_due(session, limit=batch, stale_after_s=stale_after_s)
        due = await events_repo.take_due(session, limit=batch, stale_after_s=stale_after_s)
    # Released first: their time has come. A released event is queued with the usual lease,
    # so one whose publish fails here is published again by take_due() in a later round.
    sent_released = _publish_all(released, publish)
    sent_due = _publish_all(due, publish) if sent_released == len(released) else 0
    found, published = len(released) + len(due), sent_released + sent_due
    # Runs every few seconds: a line only when something was released or published again.
    if released:
        log.info("scheduled_released", released=len(released), published=sent_released)
    if sent_due:
        log.info("outbox_republished", found=len(due), published=sent_due)
    if published < found:
        log.warning("outbox_publish_failed", found=found, published=published)
    elif not found:
        log.debug("outbox_idle")
    return SweepResult(found=found, published=published)


async def cleanup(db: Database, *, retention_days: int) -> int:
    async with db.transaction() as session:
        deleted = await events_repo.delete_finished_before(
            session, before=events_repo.cutoff(retention_days)
        )
        # Hosted OAuth flow states live 10 minutes; a day later they only take room.
        await states_repo.purge_expired(session, before=datetime.now(UTC) - timedelta(days=1))
    if deleted:
        log.info("events_cleaned_up", deleted=deleted, retention_days=retention_days)
    return deleted
