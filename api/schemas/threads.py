"""Thread bodies (API.md "Messages and threads")."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from api.schemas.common import Address


class ThreadPublic(BaseModel):
    id: str
    account_id: str
    subject: str | None
    message_count: int
    unread_count: int
    participants: list[Address]
    last_message_at: datetime | None


class ThreadPage(BaseModel):
    data: list[ThreadPublic]
    next_cursor: str | None
