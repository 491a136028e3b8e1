"""/v1/templates: the tenant's mail templates (API.md "Additions": Sending, templates)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Response

from api.auth import PrincipalDep
from api.deps import SettingsDep, UowDep
from api.schemas.common import error_responses
from api.schemas.templates import TemplateIn, TemplatePage, TemplatePublic
from database.models import Template
from database.repositories.outbound import templates as templates_repo
from services import cursors
from services.accounts.quotas import ensure_template_room
from services.errors import NotFound
from services.outbound import template_pool
from services.outbound import templates as templates_svc

router = APIRouter(
    prefix="/v1/templates", tags=["templates"], responses=error_responses(401, 404, 422)
)
Name = Annotated[
    str,
    Path(
        pattern=templates_svc.NAME_PATTERN,
        description="1-100 letters, digits, `-`, `_` and `.`",
    ),
]


def template_public(t: Template) -> TemplatePublic:
    return TemplatePublic(
        name=t.name,
        subject=t.subject,
        text=t.text,
        html=t.html,
        created_at=t.created_at,
        updated_at=t.updated_at,
    )


@router.put(
    "/{name}",
    response_model=TemplatePublic,
    responses={201: {"model": TemplatePublic, "description": "Created"}},
)
async def put_template(
    name: Name,
    body: Annotated[TemplateIn, Body()],
    principal: PrincipalDep,
    uow: UowDep,
    settings: SettingsDep,
    response: Response,
) -> TemplatePublic:
    """Create (201) or replace (200) a template. Its syntax and what it uses are checked
    here: a template that could not render is 422 now, not at send time."""
    # In a worker process with hard limits, never on this event loop (docs/security.md).
    await template_pool.check(
        templates_svc.Parts(subject=body.subject, text=body.text, html=body.html)
    )
    await ensure_template_room(
        uow.session,
        tenant_id=principal.tenant_id,
        name=name,
        cap=settings.max_templates_per_tenant,
    )
    template, created = await templates_repo.put(
        uow.session,
        tenant_id=principal.tenant_id,
        name=name,
        subject=body.subject,
        text=body.text,
        html=body.html,
    )
    await uow.commit()
    response.status_code = 201 if created else 200
    return template_public(template)


@router.get("", response_model=TemplatePage, responses=error_responses(400))
async def list_templates(
    principal: PrincipalDep,
    uow: UowDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> TemplatePage:
    """The tenant's templates, newest first."""
    key = cursors.signing_key(settings)
    scope = {"kind": "templates", "tenant": str(principal.tenant_id)}
    after = cursors.decode(key, scope, cursor) if cursor else None
    rows = await templates_repo.list_page(
        uow.session, tenant_id=principal.tenant_id, after=after, limit=limit + 1
    )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = cursors.encode(key, scope, rows[-1].created_at, rows[-1].id)
    return TemplatePage(data=[template_public(t) for t in rows], next_cursor=next_cursor)


@router.get("/{name}", response_model=TemplatePublic)
async def get_template(name: Name, principal: PrincipalDep, uow: UowDep) -> TemplatePublic:
    template = await templates_repo.get(uow.session, tenant_id=principal.tenant_id, name=name)
    if template is None:
        raise NotFound("No such template.")
    return template_public(template)


@router.delete("/{name}", status_code=204)
async def delete_template(name: Name, principal: PrincipalDep, uow: UowDep) -> Response:
    """Remove the template; sends already accepted keep what it rendered."""
    if not await templates_repo.delete(uow.session, tenant_id=principal.tenant_id, name=name):
        raise NotFound("No such template.")
    await uow.commit()
    return Response(status_code=204)
