"""Keeping a claim alive: a running task renews its event's lease in the background.

A claim's lease is short (`claim_lease_s`, 60 s by default) and renewed every quarter of it
while the work runs, so when a worker dies the outbox sweeper re-publishes its event within
about a minute, instead of waiting out the task's hard time limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence

import structlog

from database.repositories.events import lifecycle
from database.repositories.events import rows as events_repo
from services.events.absorbed import Absorbed
from worker.runtime import Runtime

log = structlog.get_logger(__name__)


@contextlib.asynccontextmanager
async def kept_claim(
    rt: Runtime,
    *,
    event_id: uuid.UUID,
    task_id: str,
    absorbed: Sequence[Absorbed] = (),
) -> AsyncIterator[None]:
    """Renew the claim's lease, and that of the events the work absorbed, while it runs."""
    lease = rt.settings.claim_lease_s

    async def renew() -> None:
        while True:
            await asyncio.sleep(lease / 4)
            try:
                async with rt.db.autocommit() as conn:
                    await events_repo.renew_lease(
                        conn, event_id=event_id, task_id=task_id, lease_s=lease
                    )
                    for one in list(absorbed):
                        await lifecycle.renew_absorbed(
                            conn, ids=list(one.ids), absorbed_at=one.absorbed_at, lease_s=lease
                        )
            except Exception as exc:  # the database is away; the work will find out too
                log.warning("lease_renew_failed", error=type(exc).__name__)

    renewer = asyncio.create_task(renew())
    try:
        yield
    finally:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer
