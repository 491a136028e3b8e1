"""/v1/threads: conversations, newest first (API.md "Messages and threads")."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.auth import PrincipalDep
from api.deps import SettingsDep, UowDep
from api.schemas.common import Address, error_responses
from api.schemas.threads import ThreadPage, ThreadPublic
from services.messages import threads as thread_listing

router = APIRouter(prefix="/v1/threads", tags=["messages"], responses=error_responses(401, 422))


def thread_public(r: Any) -> ThreadPublic:
    return ThreadPublic(
        id=str(r["id"]),
        account_id=str(r["account_id"]),
        subject=r["subject"],
        message_count=r["message_count"],
        unread_count=r["unread_count"],
        participants=[
            Address(name=p.get("name"), email=p.get("email"))
            for p in r["participants"] or []
            if isinstance(p, dict)
        ],
        last_message_at=r["last_message_at"],
    )


@router.get("", response_model=ThreadPage, responses=error_responses(400, 404))
async def list_threads(
    principal: PrincipalDep,
    uow: UowDep,
    settings: SettingsDep,
    account_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> ThreadPage:
    """Threads with at least one message that is not deleted, by their newest message.
    `GET /v1/messages?thread_id=<id>` lists a thread's messages."""
    rows, next_cursor = await thread_listing.list_threads(
        uow.session,
        settings=settings,
        tenant_id=principal.tenant_id,
        account_id=account_id,
        limit=limit,
        cursor=cursor,
    )
    return ThreadPage(data=[thread_public(r) for r in rows], next_cursor=next_cursor)
