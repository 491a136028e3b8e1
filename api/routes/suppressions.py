"""/v1/suppressions: the addresses a tenant's sends leave out (API.md "Delivery reports")."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Response

from api.auth import PrincipalDep
from api.deps import SettingsDep, UowDep
from api.schemas.common import error_responses
from api.schemas.reports import SuppressionIn, SuppressionPage, SuppressionPublic
from services.reports import suppressions

router = APIRouter(
    prefix="/v1/suppressions", tags=["suppressions"], responses=error_responses(401, 422)
)


@router.get("", response_model=SuppressionPage, responses=error_responses(400))
async def list_suppressions(
    principal: PrincipalDep,
    uow: UowDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> SuppressionPage:
    """Suppressed addresses, newest first."""
    rows, next_cursor = await suppressions.list_page(
        uow.session, settings=settings, tenant_id=principal.tenant_id, limit=limit, cursor=cursor
    )
    return SuppressionPage(data=[SuppressionPublic(**r) for r in rows], next_cursor=next_cursor)


@router.post("", status_code=201, response_model=SuppressionPublic)
async def add_suppression(
    body: Annotated[SuppressionIn, Body()], principal: PrincipalDep, uow: UowDep
) -> SuppressionPublic:
    """Suppress an address; one already listed keeps its entry (and answers it)."""
    row = await suppressions.add(
        uow.session, tenant_id=principal.tenant_id, email=body.email, reason=body.reason
    )
    await uow.commit()
    return SuppressionPublic(**row)


@router.delete("/{email}", status_code=204, responses=error_responses(404))
async def remove_suppression(
    email: Annotated[str, Path(max_length=320)], principal: PrincipalDep, uow: UowDep
) -> Response:
    """Take an address off the list: sends reach it again."""
    await suppressions.remove(uow.session, tenant_id=principal.tenant_id, email=email)
    await uow.commit()
    return Response(status_code=204)
