"""/v1/events: the ledger of webhooks and jobs of the caller's tenant (API.md "Events")."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from celery import Celery
from fastapi import APIRouter, Depends, Query

from api.auth import PrincipalDep
from api.deps import SettingsDep, UowDep, get_celery
from api.schemas.common import error_responses
from api.schemas.events import EventPage, EventPublic
from database.models import Event
from database.repositories.events import query as events_query
from database.repositories.events import rows as events_repo
from services import cursors
from services.errors import NotFound
from services.events import cancel
from services.events.public import event_fields

router = APIRouter(prefix="/v1/events", tags=["events"], responses=error_responses(401, 422))
Status = Literal[
    "scheduled",
    "received",
    "queued",
    "processing",
    "retrying",
    "succeeded",
    "ignored",
    "dead",
    "cancelled",
]


def event_public(e: Event) -> EventPublic:
    return EventPublic(**event_fields(e))


@router.get("", response_model=EventPage, responses=error_responses(400))
async def list_events(
    principal: PrincipalDep,
    uow: UowDep,
    settings: SettingsDep,
    status: Status | None = None,
    type: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    source: Literal["nylas", "api", "schedule", "push"] | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> EventPage:
    """The tenant's events, newest first."""
    key = cursors.signing_key(settings)
    scope = {
        "kind": "events",
        "tenant": str(principal.tenant_id),
        "status": status,
        "type": type,
        "source": source,
    }
    after = cursors.decode(key, scope, cursor) if cursor else None
    rows = await events_query.list_page(
        uow.session,
        tenant_id=principal.tenant_id,
        status=status,
        type=type,
        source=source,
        after=after,
        limit=limit + 1,
    )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = cursors.encode(key, scope, rows[-1].received_at, rows[-1].id)
    return EventPage(data=[event_public(e) for e in rows], next_cursor=next_cursor)


@router.get("/{event_id}", response_model=EventPublic, responses=error_responses(404))
async def get_event(event_id: uuid.UUID, principal: PrincipalDep, uow: UowDep) -> EventPublic:
    event = await events_repo.get_for_tenant(uow.session, principal.tenant_id, event_id)
    if event is None:
        raise NotFound("No such event.")
    return event_public(event)


@router.post("/{event_id}/cancel", response_model=EventPublic, responses=error_responses(404, 409))
async def cancel_event(
    event_id: uuid.UUID,
    principal: PrincipalDep,
    uow: UowDep,
    celery: Annotated[Celery, Depends(get_celery)],
) -> EventPublic:
    """Cancel a job that has not started: while `scheduled`, `received`, `queued` or
    `retrying` (409 once it is `processing` or finished). A cancelled job never runs."""
    event = await cancel.cancel_event(uow, tenant_id=principal.tenant_id, event_id=event_id)
    await uow.commit()
    await cancel.revoke_tasks(celery, event)
    return event_public(event)
