"""Tenants' webhook endpoints: create, change, rotate, test, re-send (API.md "Outbound events").

The secret is shown once (create, rotate) and stored encrypted like mail credentials.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from database.base import utcnow
from database.models import WebhookEndpoint, WebhookEndpointStatus
from database.repositories.tenant_events import deliveries as deliveries_repo
from database.repositories.tenant_events import endpoints as endpoints_repo
from services import crypto
from services.errors import NotFound, ValidationFailed
from services.tenant_events import signing, url_policy
from services.tenant_events.emit import TenantEventType, emit
from settings import Settings

MAX_ENDPOINTS = 20
# During a rotation the old secret keeps signing this long (API.md "Outbound events").
ROTATION_OVERLAP = timedelta(hours=24)


class EndpointLimitReached(ValidationFailed):
    """The tenant already has as many webhook endpoints as it may have."""

    code = "endpoint_limit_reached"


def seal(settings: Settings, secret: str) -> str:
    return crypto.encrypt_json(settings, {"secret": secret})


def unseal(settings: Settings, sealed: str) -> str:
    return str(crypto.decrypt_json(settings, sealed)["secret"])


def check_event_types(types: list[str] | None) -> list[str] | None:
    """The filter, de-duplicated in catalog order; unknown types are 422."""
    if types is None:
        return None
    known = {t.value for t in TenantEventType}
    unknown = sorted(set(types) - known)
    if unknown:
        raise ValidationFailed(f"Unknown event types: {', '.join(unknown)}.")
    return [t.value for t in TenantEventType if t.value in set(types)]


def public(endpoint: WebhookEndpoint, *, secret: str | None = None) -> dict[str, Any]:
    """The endpoint as the API shows it; `secret` only in the create answer."""
    out: dict[str, Any] = {
        "id": str(endpoint.id),
        "url": endpoint.url,
        "event_types": endpoint.event_types,
        "description": endpoint.description,
        "status": endpoint.status,
        "created_at": endpoint.created_at,
    }
    if secret is not None:
        out["secret"] = secret
    return out


async def create(
    session: AsyncSession,
    settings: Settings,
    *,
    tenant_id: uuid.UUID,
    url: str,
    event_types: list[str] | None,
    description: str | None,
) -> tuple[WebhookEndpoint, str]:
    """A new active endpoint and its secret (the only time the secret is shown)."""
    types = check_event_types(event_types)
    # DNS before the transaction takes its lock (STYLE.md: no network inside a transaction).
    await url_policy.check_configured(url, allowed=settings.allowed_private_webhook_hosts)
    if await endpoints_repo.lock_tenant(session, tenant_id) >= MAX_ENDPOINTS:
        raise EndpointLimitReached(f"A tenant may have at most {MAX_ENDPOINTS} webhook endpoints.")
    secret = signing.new_secret()
    endpoint = await endpoints_repo.create(
        session,
        tenant_id=tenant_id,
        url=url,
        event_types=types,
        description=description,
        secret=seal(settings, secret),
    )
    return endpoint, secret


async def get(
    session: AsyncSession, *, tenant_id: uuid.UUID, endpoint_id: uuid.UUID
) -> WebhookEndpoint:
    endpoint = await endpoints_repo.get(session, tenant_id=tenant_id, endpoint_id=endpoint_id)
    if endpoint is None:
        raise NotFound("No such webhook endpoint.")
    return endpoint


async def update(
    session: AsyncSession,
    settings: Settings,
    *,
    tenant_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    changes: dict[str, Any],
) -> WebhookEndpoint:
    """Apply the fields given; `status: active` turns a disabled endpoint on again."""
    values: dict[str, Any] = {}
    if "url" in changes:
        await url_policy.check_configured(
            changes["url"], allowed=settings.allowed_private_webhook_hosts
        )
        values["url"] = changes["url"]
    if "event_types" in changes:
        values["event_types"] = check_event_types(changes["event_types"])
    if "description" in changes:
        values["description"] = changes["description"]
    if "status" in changes:
        status = WebhookEndpointStatus(changes["status"])
        values["status"] = status.value
        values["disabled_reason"] = None if status is WebhookEndpointStatus.active else "api"
        values["failing_since"] = None
    endpoint = await endpoints_repo.update(
        session, tenant_id=tenant_id, endpoint_id=endpoint_id, values=values
    )
    if endpoint is None:
        raise NotFound("No such webhook endpoint.")
    if values.get("status") == WebhookEndpointStatus.disabled.value:
        await deliveries_repo.fail_open(
            session, endpoint_ids=[endpoint.id], error="endpoint disabled"
        )
    return endpoint


async def rotate(
    session: AsyncSession, settings: Settings, *, tenant_id: uuid.UUID, endpoint_id: uuid.UUID
) -> str:
    """A new secret; the old one also signs for ROTATION_OVERLAP."""
    secret = signing.new_secret()
    found = await endpoints_repo.rotate_secret(
        session,
        tenant_id=tenant_id,
        endpoint_id=endpoint_id,
        secret=seal(settings, secret),
        previous_until=utcnow() + ROTATION_OVERLAP,
    )
    if not found:
        raise NotFound("No such webhook endpoint.")
    return secret


async def send_test(
    session: AsyncSession, *, tenant_id: uuid.UUID, endpoint_id: uuid.UUID
) -> uuid.UUID:
    """A `webhook.test` event, fanned out to this endpoint only."""
    endpoint = await get(session, tenant_id=tenant_id, endpoint_id=endpoint_id)
    return await emit(
        session,
        tenant_id=tenant_id,
        type=TenantEventType.webhook_test,
        data={"endpoint_id": str(endpoint.id)},
    )


def disabled_payload(endpoint: WebhookEndpoint) -> dict[str, Any]:
    """`webhook.disabled` data: which endpoint and why ("gone": 410, "failing")."""
    return {
        "endpoint": {**public(endpoint), "created_at": endpoint.created_at.isoformat()},
        "reason": endpoint.disabled_reason,
    }


async def resend(
    session: AsyncSession, *, tenant_id: uuid.UUID, endpoint_id: uuid.UUID, delivery_id: uuid.UUID
) -> None:
    if not await deliveries_repo.resend(
        session, tenant_id=tenant_id, endpoint_id=endpoint_id, delivery_id=delivery_id
    ):
        raise NotFound("No such delivery.")


async def recover(
    session: AsyncSession, *, tenant_id: uuid.UUID, endpoint_id: uuid.UUID, since: datetime
) -> int:
    await get(session, tenant_id=tenant_id, endpoint_id=endpoint_id)
    return await deliveries_repo.recover(
        session, tenant_id=tenant_id, endpoint_id=endpoint_id, since=since
    )
