"""/v1/dead-letters: what failed for good, per tenant; inspect, replay, delete (API.md)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel

from api.auth import PrincipalDep
from api.deps import UowDep, get_database
from api.schemas.common import JobAccepted, error_responses
from database.engine import Database
from services.events import dead_letters as dlq

router = APIRouter(
    prefix="/v1/dead-letters", tags=["dead letters"], responses=error_responses(401, 422)
)
DbDep = Annotated[Database, Depends(get_database)]


class DeadLetterPublic(BaseModel):  # type: ignore[no-redef]  # pydantic plugin: field "kwargs"
    id: str
    event_id: str | None
    task_name: str
    args: list[Any]
    kwargs: dict[str, Any]
    exception_type: str
    exception_message: str
    attempts: int
    first_failed_at: datetime
    last_failed_at: datetime
    replayed_at: datetime | None


class DeadLetterPage(BaseModel):
    data: list[DeadLetterPublic]
    next_cursor: str | None


@router.get("", response_model=DeadLetterPage, responses=error_responses(400))
async def list_dead_letters(
    principal: PrincipalDep,
    db: DbDep,
    task: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> DeadLetterPage:
    """The tenant's dead letters, newest first; `task` filters by task name."""
    rows, next_cursor = await dlq.list_page(
        db, tenant_id=principal.tenant_id, task=task, limit=limit, cursor=cursor
    )
    return DeadLetterPage(
        data=[DeadLetterPublic(**dlq.public(r)) for r in rows], next_cursor=next_cursor
    )


@router.get("/{dead_letter_id}", response_model=DeadLetterPublic, responses=error_responses(404))
async def get_dead_letter(
    dead_letter_id: uuid.UUID, principal: PrincipalDep, db: DbDep
) -> DeadLetterPublic:
    """One dead letter of the caller's tenant."""
    dl = await dlq.show(db, dead_letter_id, tenant_id=principal.tenant_id)
    return DeadLetterPublic(**dlq.public(dl))


@router.post(
    "/{dead_letter_id}/replay",
    status_code=202,
    response_model=JobAccepted,
    responses=error_responses(404, 409),
)
async def replay_dead_letter(
    dead_letter_id: uuid.UUID, principal: PrincipalDep, uow: UowDep
) -> JobAccepted:
    """Run the failed event again as a new attempt; the event keeps its history."""
    job = await dlq.prepare_replay(uow.session, dead_letter_id, tenant_id=principal.tenant_id)
    uow.publish_after_commit(job.job)
    await uow.commit()
    return JobAccepted(event_id=str(job.event_id), task_id=job.task_id)


@router.delete("/{dead_letter_id}", status_code=204, responses=error_responses(404))
async def delete_dead_letter(
    dead_letter_id: uuid.UUID, principal: PrincipalDep, db: DbDep
) -> Response:
    """Forget a dead letter; its event stays as it is."""
    await dlq.delete(db, dead_letter_id, tenant_id=principal.tenant_id)
    return Response(status_code=204)
