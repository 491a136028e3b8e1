"""/v1/messages reads: list with filters, search and cursor; detail; attachment bytes."""

from __future__ import annotations

import re
import uuid
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.auth import PrincipalDep
from api.deps import SettingsDep, UowDep
from api.schemas.common import error_responses
from api.schemas.messages import (
    AttachmentPublic,
    DeliveryPublic,
    MessageDetail,
    MessagePage,
    MessagePublic,
)
from database.repositories.messages.query import MessageFilter
from services.messages import service as messages
from services.messages import thumbnails
from services.messages.fields import message_fields
from services.messages.reply_text import reply_text
from services.reports.delivery import delivery_of

router = APIRouter(prefix="/v1/messages", tags=["messages"], responses=error_responses(401, 422))


@router.get(
    "",
    response_model=MessagePage,
    response_model_by_alias=True,
    responses=error_responses(400, 404),
)
async def list_messages(
    principal: PrincipalDep,
    uow: UowDep,
    settings: SettingsDep,
    account_id: uuid.UUID | None = None,
    folder: Annotated[
        str | None, Query(min_length=1, max_length=500, description="Folder name or role")
    ] = None,
    is_spam: bool | None = None,
    unread: bool | None = None,
    q: Annotated[
        str | None, Query(min_length=1, max_length=500, description="Full-text search")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    thread_id: uuid.UUID | None = None,
) -> MessagePage:
    """Newest first; `next_cursor` continues the same query and is refused by any other."""
    f = MessageFilter(
        tenant_id=principal.tenant_id,
        account_id=account_id,
        folder=folder,
        is_spam=is_spam,
        unread=unread,
        q=q,
        thread_id=thread_id,
    )
    rows, next_cursor = await messages.list_messages(
        uow.session, settings=settings, f=f, limit=limit, cursor=cursor
    )
    return MessagePage(
        data=[MessagePublic(**message_fields(r)) for r in rows], next_cursor=next_cursor
    )


@router.api_route("/send", methods=["GET", "PUT", "PATCH", "DELETE"], include_in_schema=False)
@router.api_route("/delete", methods=["GET", "PUT", "PATCH", "DELETE"], include_in_schema=False)
async def post_only() -> None:
    """/send and /delete take POST only; without this, GET would reach /{message_id}."""
    raise StarletteHTTPException(405)


@router.get(
    "/{message_id}",
    response_model=MessageDetail,
    response_model_by_alias=True,
    responses=error_responses(404),
)
async def get_message(message_id: uuid.UUID, principal: PrincipalDep, uow: UowDep) -> MessageDetail:
    """The message with its text, html, headers and attachment list."""
    row, atts = await messages.get_message(uow.session, principal.tenant_id, message_id)
    delivery = await delivery_of(uow.session, tenant_id=principal.tenant_id, message=row)
    return MessageDetail(
        **message_fields(row),
        text=row["text"],
        html=row["html"],
        headers=row["headers"] or [],
        reply_text=reply_text(row["text"]),
        attachments=[
            AttachmentPublic(
                id=str(a["id"]),
                filename=a["filename"],
                content_type=a["content_type"],
                size=a["size"],
            )
            for a in atts
        ],
        delivery=[DeliveryPublic(**d) for d in delivery],
    )


@router.get(
    "/{message_id}/attachments/{attachment_id}",
    response_class=Response,
    responses={
        200: {
            "content": {"application/octet-stream": {}},
            "description": "The attachment bytes with their content type",
        },
        **error_responses(404),
    },
)
async def download_attachment(
    message_id: uuid.UUID, attachment_id: uuid.UUID, principal: PrincipalDep, uow: UowDep
) -> Response:
    found = await messages.get_attachment(
        uow.session, principal.tenant_id, message_id, attachment_id
    )
    return Response(
        content=found["content"],
        media_type=safe_media_type(found["content_type"]),
        headers={"Content-Disposition": content_disposition(found["filename"] or "attachment")},
    )


@router.get(
    "/{message_id}/attachments/{attachment_id}/thumbnail",
    response_class=Response,
    responses={
        200: {
            "content": {"image/webp": {}, "image/png": {}},
            "description": "A preview at most 256 px on its long side",
        },
        **error_responses(404),
    },
)
async def attachment_thumbnail(
    message_id: uuid.UUID, attachment_id: uuid.UUID, principal: PrincipalDep, uow: UowDep
) -> Response:
    """The image attachment's thumbnail; 404 `thumbnail_not_available` until it is made, or
    when it never can be (not an image, or refused as hostile)."""
    media_type, content = await thumbnails.get_thumbnail(
        uow.session,
        tenant_id=principal.tenant_id,
        message_id=message_id,
        attachment_id=attachment_id,
    )
    return Response(
        content=content,
        media_type=media_type,
        headers={"Cache-Control": "private, max-age=86400"},
    )


# Types a browser shows without running anything: raster images, PDF, plain text. SVG is an
# image that runs script; HTML, XML and everything else is served as opaque bytes, so a mail
# attachment opened from our origin can never act as a page of it.
SAFE_MEDIA_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/bmp",
        "image/tiff",
        "image/avif",
        "image/heic",
        "image/heif",
        "application/pdf",
        "text/plain",
    }
)
_CHARSET = re.compile(r";\s*charset=\"?([A-Za-z0-9._:-]{1,40})\"?\s*(;|$)", re.IGNORECASE)


def safe_media_type(value: str | None) -> str:
    """The stored type when it is on the safe list (text/plain keeps a plain charset), else
    application/octet-stream: a provider's or sender's type is never echoed as it came."""
    if not value:
        return "application/octet-stream"
    essence = value.split(";", 1)[0].strip().lower()
    if essence not in SAFE_MEDIA_TYPES:
        return "application/octet-stream"
    if essence == "text/plain":
        charset = _CHARSET.search(value[:200])
        if charset:
            return f"text/plain; charset={charset.group(1)}"
    return essence


def content_disposition(name: str) -> str:
    """An ASCII fallback plus the exact UTF-8 name (RFC 6266 / RFC 5987 `filename*`)."""
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\;' else "_" for c in name)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"
