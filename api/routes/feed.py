"""/v1/feed: the tenant's outbound events in seq order, paged or as a live SSE stream."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from api.auth import PrincipalDep
from api.deps import DatabaseDep, SettingsDep
from api.schemas.common import error_responses
from api.schemas.feed import FeedPage, TenantEventPublic
from services.errors import ValidationFailed
from services.tenant_events import feed, stream

router = APIRouter(prefix="/v1/feed", tags=["events"], responses=error_responses(401, 422))

_SSE = "text/event-stream"


def _resume_point(after: int, last_event_id: str | None) -> int:
    """A reconnecting EventSource's `Last-Event-ID` (a seq) wins over `after`."""
    if last_event_id is None or not last_event_id.strip():
        return after
    try:
        value = int(last_event_id.strip())
    except ValueError:
        raise ValidationFailed("Last-Event-ID must be a seq (an integer).") from None
    if value < 0:
        raise ValidationFailed("Last-Event-ID must be a seq (an integer >= 0).")
    return value


@router.get(
    "",
    response_model=FeedPage,
    responses={
        200: {
            "description": "A page of events, or with `Accept: text/event-stream` a live stream "
            "(`id:` the seq, `event:` the type, `data:` the event's JSON)",
            "content": {_SSE: {"schema": {"type": "string"}}},
        },
        **error_responses(429),
    },
)
async def read_feed(
    request: Request,
    principal: PrincipalDep,
    db: DatabaseDep,
    settings: SettingsDep,
    after: Annotated[int, Query(ge=0, description="The last seq already seen")] = 0,
    limit: Annotated[int, Query(ge=1, le=feed.MAX_LIMIT)] = 100,
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
) -> FeedPage | StreamingResponse:
    """Events after `after` in seq order; a reader paging with `next_after` never misses one."""
    if _SSE in request.headers.get("accept", ""):
        frames = await stream.open_stream(
            db,
            request.app.state.redis,
            tenant_id=principal.tenant_id,
            after=_resume_point(after, last_event_id),
            poll_s=settings.feed_poll_s,
            heartbeat_s=settings.feed_heartbeat_s,
            max_streams=settings.feed_max_streams,
            disconnected=request.is_disconnected,
        )
        return StreamingResponse(
            frames,
            media_type=_SSE,
            # No proxy buffering (nginx) and no caching: a stream is only useful live.
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    items, next_after = await feed.read_feed(
        db, tenant_id=principal.tenant_id, after=after, limit=limit
    )
    return FeedPage(data=[TenantEventPublic(**i) for i in items], next_after=next_after)
