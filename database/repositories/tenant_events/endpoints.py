"""Tenants' webhook endpoints (`webhook_endpoint`), always read and changed through the tenant."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import WebhookEndpoint, WebhookEndpointStatus

_w = WebhookEndpoint.__table__  # type: ignore[attr-defined]

# The fan-out cursor starts at the tenant's newest event when its first endpoint is made:
# an endpoint is owed what happens from its creation on, not the tenant's history.
_START_FANOUT = sa.text(
    """
    INSERT INTO webhook_fanout (tenant_id, last_seq)
    SELECT :tenant_id, coalesce(max(seq), 0) FROM tenant_event WHERE tenant_id = :tenant_id
    ON CONFLICT (tenant_id) DO NOTHING
    """
)


async def lock_tenant(session: AsyncSession, tenant_id: uuid.UUID) -> int:
    """Serialise endpoint creation per tenant (the limit check); -> endpoints it has now."""
    await session.execute(
        sa.text("SELECT 1 FROM tenant WHERE id = :t FOR UPDATE"), {"t": tenant_id}
    )
    stmt = sa.select(sa.func.count()).select_from(_w).where(_w.c.tenant_id == tenant_id)
    return int((await session.execute(stmt)).scalar_one())


async def create(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    url: str,
    event_types: list[str] | None,
    description: str | None,
    secret: str,
) -> WebhookEndpoint:
    stmt = (
        sa.insert(_w)
        .values(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            url=url,
            # SQL NULL, not JSON null: the fan-out reads NULL as "every type".
            event_types=event_types if event_types is not None else sa.null(),
            description=description,
            status=WebhookEndpointStatus.active.value,
            secret=secret,
        )
        .returning(*_w.c)
    )
    row = (await session.execute(stmt)).mappings().one()
    await session.execute(_START_FANOUT, {"tenant_id": tenant_id})
    return WebhookEndpoint(**row)


async def get(
    session: AsyncSession, *, tenant_id: uuid.UUID, endpoint_id: uuid.UUID
) -> WebhookEndpoint | None:
    stmt = sa.select(WebhookEndpoint).where(_w.c.tenant_id == tenant_id, _w.c.id == endpoint_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def list_all(session: AsyncSession, *, tenant_id: uuid.UUID) -> list[WebhookEndpoint]:
    stmt = (
        sa.select(WebhookEndpoint)
        .where(_w.c.tenant_id == tenant_id)
        .order_by(_w.c.created_at, _w.c.id)
    )
    return list((await session.execute(stmt)).scalars())


async def update(
    session: AsyncSession, *, tenant_id: uuid.UUID, endpoint_id: uuid.UUID, values: dict[str, Any]
) -> WebhookEndpoint | None:
    if "event_types" in values and values["event_types"] is None:
        values = {**values, "event_types": sa.null()}
    stmt = (
        sa.update(_w)
        .where(_w.c.tenant_id == tenant_id, _w.c.id == endpoint_id)
        .values(**values, updated_at=sa.func.now())
        .returning(*_w.c)
    )
    row = (await session.execute(stmt)).mappings().one_or_none()
    return WebhookEndpoint(**row) if row is not None else None


async def delete(session: AsyncSession, *, tenant_id: uuid.UUID, endpoint_id: uuid.UUID) -> bool:
    stmt = (
        sa.delete(_w).where(_w.c.tenant_id == tenant_id, _w.c.id == endpoint_id).returning(_w.c.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none() is not None


async def rotate_secret(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    secret: str,
    previous_until: datetime,
) -> bool:
    """The new secret signs from now on; the current one keeps signing until `previous_until`."""
    stmt = (
        sa.update(_w)
        .where(_w.c.tenant_id == tenant_id, _w.c.id == endpoint_id)
        .values(
            previous_secret=_w.c.secret,
            previous_secret_expires_at=previous_until,
            secret=secret,
            updated_at=sa.func.now(),
        )
        .returning(_w.c.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none() is not None


async def mark_failing(
    session: AsyncSession, *, failed: list[uuid.UUID], ok: list[uuid.UUID]
) -> None:
    """An endpoint with a success is not failing; one with only failures is, from now on
    if it was not already."""
    if ok:
        await session.execute(
            sa.update(_w)
            .where(_w.c.id.in_(ok), _w.c.failing_since.is_not(None))
            .values(failing_since=None)
        )
    if failed:
        await session.execute(
            sa.update(_w)
            .where(_w.c.id.in_(failed), _w.c.failing_since.is_(None))
            .values(failing_since=sa.func.now())
        )


async def disable(
    session: AsyncSession,
    *,
    gone: list[uuid.UUID],
    candidates: list[uuid.UUID],
    failing_for_s: float,
) -> list[WebhookEndpoint]:
    """Disable the `gone` endpoints (410) and those of `candidates` failing for
    `failing_for_s` or more; -> the endpoints this call disabled."""
    out: list[WebhookEndpoint] = []
    active = _w.c.status == WebhookEndpointStatus.active.value
    for ids, cond, reason in (
        (gone, sa.true(), "gone"),
        (
            candidates,
            _w.c.failing_since
            <= sa.func.now() - sa.func.make_interval(0, 0, 0, 0, 0, 0, failing_for_s),
            "failing",
        ),
    ):
        if not ids:
            continue
        stmt = (
            sa.update(_w)
            .where(_w.c.id.in_(ids), active, cond)
            .values(
                status=WebhookEndpointStatus.disabled.value,
                disabled_reason=reason,
                updated_at=sa.func.now(),
            )
            .returning(*_w.c)
        )
        out += [WebhookEndpoint(**r) for r in (await session.execute(stmt)).mappings()]
    return out
