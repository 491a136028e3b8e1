"""The suppression list: the API's reads and writes, what a send leaves out, and one-click
unsubscribe (RFC 8058)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from database.repositories.reports import suppressions as repo
from services import cursors
from services.errors import BadRequest, NotFound, ValidationFailed
from services.reports import tokens
from settings import Settings

MANUAL = "manual"
UNSUBSCRIBED = "unsubscribed"


class AllRecipientsSuppressed(ValidationFailed):
    """Every recipient of a send is on the tenant's suppression list: nothing is sent."""

    code = "all_recipients_suppressed"


def normalize(email: str) -> str:
    return email.strip().lower()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _cursor(key: bytes, tenant_id: uuid.UUID, at: datetime, email: str) -> str:
    body = _b64(orjson.dumps({"t": at.isoformat(), "e": email, "s": str(tenant_id)}))
    return f"{body}.{_b64(hmac.new(key, body.encode(), hashlib.sha256).digest()[:16])}"


def _position(key: bytes, tenant_id: uuid.UUID, cursor: str) -> tuple[datetime, str]:
    invalid = BadRequest("The cursor is not valid for this query.")
    if len(cursor) > 1024 or cursor.count(".") != 1:
        raise invalid
    body, sig = cursor.split(".")
    expected = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest()[:16])
    if not hmac.compare_digest(expected.encode(), sig.encode("ascii", "replace")):
        raise invalid
    try:
        data = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        at, email, scope = datetime.fromisoformat(data["t"]), str(data["e"]), data["s"]
    except (ValueError, KeyError, TypeError):
        raise invalid from None
    if scope != str(tenant_id) or at.tzinfo is None:
        raise invalid
    return at, email


def public(row: Any) -> dict[str, Any]:
    return {
        "email": row["email"],
        "reason": row["reason"],
        "report_id": str(row["report_id"]) if row["report_id"] else None,
        "created_at": row["created_at"],
    }


async def list_page(
    session: AsyncSession,
    *,
    settings: Settings,
    tenant_id: uuid.UUID,
    limit: int,
    cursor: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page newest first, and the cursor of the next one."""
    key = cursors.signing_key(settings)
    after = _position(key, tenant_id, cursor) if cursor else None
    rows = await repo.page(session, tenant_id=tenant_id, after=after, limit=limit + 1)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = _cursor(key, tenant_id, rows[-1]["created_at"], rows[-1]["email"])
    return [public(r) for r in rows], next_cursor


async def add(
    session: AsyncSession, *, tenant_id: uuid.UUID, email: str, reason: str | None
) -> dict[str, Any]:
    """Suppress an address (an address already listed keeps its first entry)."""
    email = normalize(email)
    await repo.add(
        session,
        tenant_id=tenant_id,
        rows=[{"email": email, "reason": reason or MANUAL, "report_id": None}],
    )
    row = await repo.get(session, tenant_id=tenant_id, email=email)
    assert row is not None
    return public(row)


async def remove(session: AsyncSession, *, tenant_id: uuid.UUID, email: str) -> None:
    if not await repo.remove(session, tenant_id=tenant_id, email=normalize(email)):
        raise NotFound("That address is not suppressed.")


async def suppressed_among(
    session: AsyncSession, *, tenant_id: uuid.UUID, emails: list[str]
) -> set[str]:
    """Which of these addresses (any case) the tenant suppresses, lowercased."""
    return await repo.among(
        session, tenant_id=tenant_id, emails=sorted({normalize(e) for e in emails})
    )


async def unsubscribe(session: AsyncSession, *, settings: Settings, token: str) -> bool:
    """Suppress the recipient a one-click token names; False for a token we did not make.
    Idempotent: a second click changes nothing."""
    found = tokens.read_unsubscribe(settings, token)
    if found is None:
        return False
    tenant_id, email = found
    try:
        async with session.begin_nested():
            await repo.add(
                session,
                tenant_id=tenant_id,
                rows=[{"email": normalize(email), "reason": UNSUBSCRIBED, "report_id": None}],
            )
    except sa.exc.IntegrityError:
        return False  # the tenant is gone
    return True
