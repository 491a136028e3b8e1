"""/v1/webhooks: the tenant's own endpoints for outbound events (API.md "Outbound events")."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response

from api.auth import PrincipalDep
from api.deps import SettingsDep, UowDep
from api.schemas.common import error_responses
from api.schemas.webhook_endpoints import (
    DeliveryPage,
    DeliveryPublic,
    RecoverIn,
    WebhookAccepted,
    WebhookEndpointCreated,
    WebhookEndpointIn,
    WebhookEndpointList,
    WebhookEndpointPatch,
    WebhookEndpointPublic,
    WebhookSecret,
)
from database.models import WebhookDeliveryStatus
from database.repositories.tenant_events import deliveries as deliveries_repo
from database.repositories.tenant_events import endpoints as endpoints_repo
from services import cursors
from services.errors import NotFound, ValidationFailed
from services.tenant_events import endpoints as endpoints_svc

router = APIRouter(
    prefix="/v1/webhooks", tags=["outbound events"], responses=error_responses(401, 404, 422)
)


def _public(endpoint: Any) -> WebhookEndpointPublic:
    return WebhookEndpointPublic(**endpoints_svc.public(endpoint))


@router.post("", status_code=201, response_model=WebhookEndpointCreated)
async def create_endpoint(
    body: Annotated[WebhookEndpointIn, Body()],
    principal: PrincipalDep,
    uow: UowDep,
    settings: SettingsDep,
) -> WebhookEndpointCreated:
    """A new endpoint; its `secret` is shown in this answer only."""
    endpoint, secret = await endpoints_svc.create(
        uow.session,
        settings,
        tenant_id=principal.tenant_id,
        url=body.url,
        event_types=body.event_types,
        description=body.description,
    )
    await uow.commit()
    return WebhookEndpointCreated(**endpoints_svc.public(endpoint, secret=secret))


@router.get("", response_model=WebhookEndpointList)
async def list_endpoints(principal: PrincipalDep, uow: UowDep) -> WebhookEndpointList:
    rows = await endpoints_repo.list_all(uow.session, tenant_id=principal.tenant_id)
    return WebhookEndpointList(data=[_public(e) for e in rows])


@router.get("/{endpoint_id}", response_model=WebhookEndpointPublic)
async def get_endpoint(
    endpoint_id: uuid.UUID, principal: PrincipalDep, uow: UowDep
) -> WebhookEndpointPublic:
    endpoint = await endpoints_svc.get(
        uow.session, tenant_id=principal.tenant_id, endpoint_id=endpoint_id
    )
    return _public(endpoint)


@router.patch("/{endpoint_id}", response_model=WebhookEndpointPublic)
async def update_endpoint(
    endpoint_id: uuid.UUID,
    body: Annotated[WebhookEndpointPatch, Body()],
    principal: PrincipalDep,
    uow: UowDep,
    settings: SettingsDep,
) -> WebhookEndpointPublic:
    """Change the fields given; `"status": "active"` turns a disabled endpoint on again."""
    changes = body.model_dump(include=body.model_fields_set)
    if changes.get("url", "") is None or changes.get("status", "") is None:
        raise ValidationFailed("`url` and `status` cannot be null.")
    endpoint = await endpoints_svc.update(
        uow.session,
        settings,
        tenant_id=principal.tenant_id,
        endpoint_id=endpoint_id,
        changes=changes,
    )
    await uow.commit()
    return _public(endpoint)


@router.delete("/{endpoint_id}", status_code=204)
async def delete_endpoint(endpoint_id: uuid.UUID, principal: PrincipalDep, uow: UowDep) -> Response:
    """Remove the endpoint with its deliveries."""
    if not await endpoints_repo.delete(
        uow.session, tenant_id=principal.tenant_id, endpoint_id=endpoint_id
    ):
        raise NotFound("No such webhook endpoint.")
    await uow.commit()
    return Response(status_code=204)


@router.post("/{endpoint_id}/rotate-secret", response_model=WebhookSecret)
async def rotate_secret(
    endpoint_id: uuid.UUID, principal: PrincipalDep, uow: UowDep, settings: SettingsDep
) -> WebhookSecret:
    """A new secret; the old one also signs every delivery for 24 hours."""
    secret = await endpoints_svc.rotate(
        uow.session, settings, tenant_id=principal.tenant_id, endpoint_id=endpoint_id
    )
    await uow.commit()
    return WebhookSecret(secret=secret)


@router.post("/{endpoint_id}/test", status_code=202, response_model=WebhookAccepted)
async def send_test(
    endpoint_id: uuid.UUID, principal: PrincipalDep, uow: UowDep
) -> WebhookAccepted:
    """A `webhook.test` event, delivered to this endpoint only."""
    event_id = await endpoints_svc.send_test(
        uow.session, tenant_id=principal.tenant_id, endpoint_id=endpoint_id
    )
    await uow.commit()
    return WebhookAccepted(event_id=str(event_id))


@router.get(
    "/{endpoint_id}/deliveries", response_model=DeliveryPage, responses=error_responses(400)
)
async def list_deliveries(
    endpoint_id: uuid.UUID,
    principal: PrincipalDep,
    uow: UowDep,
    settings: SettingsDep,
    status: Annotated[WebhookDeliveryStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> DeliveryPage:
    """The endpoint's attempt log, newest delivery first."""
    await endpoints_svc.get(uow.session, tenant_id=principal.tenant_id, endpoint_id=endpoint_id)
    key = cursors.signing_key(settings)
    scope = {
        "kind": "webhook_deliveries",
        "tenant": str(principal.tenant_id),
        "endpoint": str(endpoint_id),
        "status": status.value if status else None,
    }
    after = cursors.decode(key, scope, cursor) if cursor else None
    rows = await deliveries_repo.list_page(
        uow.session,
        tenant_id=principal.tenant_id,
        endpoint_id=endpoint_id,
        status=status.value if status else None,
        after=after,
        limit=limit + 1,
    )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = cursors.encode(key, scope, rows[-1]["created_at"], rows[-1]["id"])
    return DeliveryPage(
        data=[
            DeliveryPublic(
                id=str(r["id"]),
                event_id=str(r["event_id"]),
                event_type=r["event_type"],
                status=r["status"],
                attempts=r["attempts"],
                last_status_code=r["last_status_code"],
                next_attempt_at=r["next_attempt_at"],
                created_at=r["created_at"],
            )
            for r in rows
        ],
        next_cursor=next_cursor,
    )


@router.post(
    "/{endpoint_id}/deliveries/{delivery_id}/resend",
    status_code=202,
    response_model=WebhookAccepted,
)
async def resend_delivery(
    endpoint_id: uuid.UUID, delivery_id: uuid.UUID, principal: PrincipalDep, uow: UowDep
) -> WebhookAccepted:
    """Send this delivery again (same `webhook-id`), with a fresh retry schedule."""
    await endpoints_svc.resend(
        uow.session, tenant_id=principal.tenant_id, endpoint_id=endpoint_id, delivery_id=delivery_id
    )
    await uow.commit()
    return WebhookAccepted()


@router.post("/{endpoint_id}/recover", status_code=202, response_model=WebhookAccepted)
async def recover(
    endpoint_id: uuid.UUID,
    body: Annotated[RecoverIn, Body()],
    principal: PrincipalDep,
    uow: UowDep,
) -> WebhookAccepted:
    """Send again every failed delivery of this endpoint made since `since`."""
    since = body.since
    if since.tzinfo is None:
        raise ValidationFailed("`since` needs a time zone (ISO 8601 with offset or Z).")
    count = await endpoints_svc.recover(
        uow.session, tenant_id=principal.tenant_id, endpoint_id=endpoint_id, since=since
    )
    await uow.commit()
    return WebhookAccepted(count=count)
