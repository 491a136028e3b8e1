"""/v1/tasks/{task_id}: a job's state, read from its event (the API has no result backend)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from api.auth import PrincipalDep
from api.deps import UowDep
from api.schemas.common import error_responses
from api.schemas.events import TaskStatus
from database.models import Event, EventStatus
from database.repositories.events import rows as events_repo
from services.errors import NotFound

router = APIRouter(prefix="/v1/tasks", tags=["jobs"], responses=error_responses(401, 404, 422))

_STATE = {
    EventStatus.received: "PENDING",
    EventStatus.queued: "PENDING",
    EventStatus.processing: "STARTED",
    EventStatus.retrying: "RETRY",
    EventStatus.succeeded: "SUCCESS",
    EventStatus.ignored: "SUCCESS",
    # Its state was stored by the event its result names.
    EventStatus.dead: "FAILURE",
    EventStatus.scheduled: "PENDING",
    # Celery's REVOKED is not among the contract's states: a cancelled job is a FAILURE whose
    # error says why.
    EventStatus.cancelled: "FAILURE",
}


def task_status(task_id: str, event: Event) -> TaskStatus:
    state = _STATE.get(EventStatus(event.status), "PENDING")
    error: dict[str, Any] | None = None
    if event.status == EventStatus.cancelled:
        error = {"code": "cancelled", "message": "The job was cancelled before it ran."}
    elif state in ("FAILURE", "RETRY") and event.last_error:
        error = {"message": event.last_error, "attempts": event.attempts}
    return TaskStatus(
        task_id=task_id,
        event_id=str(event.id),
        state=state,  # type: ignore[arg-type]
        result=event.result if state == "SUCCESS" else None,
        error=error,
        progress=event.progress,
    )


@router.get("/{task_id}", response_model=TaskStatus)
async def get_task(
    task_id: Annotated[str, Path(min_length=1, max_length=64)], principal: PrincipalDep, uow: UowDep
) -> TaskStatus:
    """PENDING, STARTED, RETRY, SUCCESS or FAILURE, with the result or the error."""
    event = await events_repo.get_by_task_id(uow.session, principal.tenant_id, task_id)
    if event is None:
        raise NotFound("No such task.")
    return task_status(task_id, event)
