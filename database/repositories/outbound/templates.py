"""Mail templates (`template`), always read and changed through the tenant."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Template

_t = Template.__table__  # type: ignore[attr-defined]


async def put(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    name: str,
    subject: str,
    text: str,
    html: str | None,
) -> tuple[Template, bool]:
    """Create or replace the tenant's template `name`; (template, created)."""
    stmt = (
        insert(_t)
        .values(
            id=uuid.uuid4(), tenant_id=tenant_id, name=name, subject=subject, text=text, html=html
        )
        .on_conflict_do_update(
            index_elements=["tenant_id", "name"],
            set_={"subject": subject, "text": text, "html": html, "updated_at": sa.func.now()},
        )
        # xmax is 0 on a row this statement inserted, not on one it updated.
        .returning(*_t.c, (sa.literal_column("xmax") == 0).label("created"))
    )
    row = dict((await session.execute(stmt)).mappings().one())
    created = bool(row.pop("created"))
    return Template(**row), created


async def get(session: AsyncSession, *, tenant_id: uuid.UUID, name: str) -> Template | None:
    stmt = sa.select(Template).where(_t.c.tenant_id == tenant_id, _t.c.name == name)
    return (await session.execute(stmt)).scalar_one_or_none()


async def delete(session: AsyncSession, *, tenant_id: uuid.UUID, name: str) -> bool:
    stmt = sa.delete(_t).where(_t.c.tenant_id == tenant_id, _t.c.name == name).returning(_t.c.id)
    return (await session.execute(stmt)).scalar_one_or_none() is not None


async def list_page(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Template]:
    """Newest first, by the (created_at, id) keyset."""
    stmt = sa.select(Template).where(_t.c.tenant_id == tenant_id)
    if after is not None:
        stmt = stmt.where(sa.tuple_(_t.c.created_at, _t.c.id) < sa.tuple_(*after))
    stmt = stmt.order_by(_t.c.created_at.desc(), _t.c.id.desc()).limit(limit)
    return list((await session.execute(stmt)).scalars())
