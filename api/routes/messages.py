"""/v1/messages reads: list with filters, search and cursor; detail; attachment bytes."""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.auth import PrincipalDep
from api.deps import SettingsDep, UowDep
from api.schemas.common import Address, error_responses
from api.schemas.messages import (
    AttachmentPublic,
    DeliveryPublic,
    MessageDetail,
    MessagePage,
    MessagePublic,
    SpamVerdict,
)
from database.repositories.messages.query import MessageFilter
from services.messages import service as messages
from services.reports.delivery import delivery_of
from services.reports.model import public_of

router = APIRouter(prefix="/v1/messages", tags=["messages"], responses=error_responses(401, 422))


def _addresses(items: list[dict[str, Any]] | None) -> list[Address]:
    return [
        Address(name=i.get("name"), email=i.get("email"))
        for i in items or []
        if isinstance(i, dict)
    ]


def message_fields(r: Any) -> dict[str, Any]:
    sender = None
    if r["from_name"] is not None or r["from_email"] is not None:
        sender = Address(name=r["from_name"], email=r["from_email"])
    spam = None
    if r["is_spam"] is not None:
        spam = SpamVerdict(
            is_spam=r["is_spam"], score=r["spam_score"], indicators=r["spam_indicators"] or []
        )
    return {
        "id": str(r["id"]),
        "account_id": str(r["account_id"]),
        "folder": r["folder"],
        "provider_id": r["provider_id"],
        "message_id_header": r["message_id_header"],
        "thread_id": r["thread_id"],
        "from": sender,
        "to": _addresses(r["to_addrs"]),
        "cc": _addresses(r["cc_addrs"]),
        "subject": r["subject"],
        "date": r["date"],
        "snippet": r["snippet"],
        "unread": r["unread"],
        "starred": r["starred"],
        "has_attachments": r["has_attachments"],
        "spam": spam,
        "category": r["category"],
        "deleted": False,
        "too_large": r["too_large"],
        "report": public_of(r["report"]),
    }


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


_MEDIA_TYPE = re.compile(r'^[\w.+-]+/[\w.+-]+(;\s*[\w.+-]+=("[^"\r\n]*"|[\w.+-]+))*$')


def safe_media_type(value: str | None) -> str:
    """The stored type when it is a plain type/subtype; a provider's odd value is not echoed."""
    return value if value and _MEDIA_TYPE.match(value) else "application/octet-stream"


def content_disposition(name: str) -> str:
    """An ASCII fallback plus the exact UTF-8 name (RFC 6266 / RFC 5987 `filename*`)."""
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\;' else "_" for c in name)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"
