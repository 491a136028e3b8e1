"""/v1/oauth/apps and /oauth/callback: OAuth2 mailboxes (API.md "OAuth2 mailboxes")."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse

from api.auth import PrincipalDep
from api.deps import DatabaseDep, SettingsDep, UowDep
from api.schemas.common import error_responses
from api.schemas.oauth import (
    AuthorizeAnswer,
    AuthorizeRequest,
    OAuthAppCreate,
    OAuthAppPage,
    OAuthAppPublic,
)
from services.oauth import apps as oauth_apps
from services.oauth import flow

router = APIRouter(prefix="/v1/oauth/apps", tags=["oauth"], responses=error_responses(401, 422))
callback_router = APIRouter(tags=["oauth"])


def _base(request: Request) -> str:
    """The scheme and host the request came to (when POSTROOM_PUBLIC_URL is unset)."""
    return f"{request.url.scheme}://{request.url.netloc}"


@router.post("", status_code=201, response_model=OAuthAppPublic)
async def create_app(
    body: OAuthAppCreate, principal: PrincipalDep, uow: UowDep, settings: SettingsDep
) -> OAuthAppPublic:
    """Register the tenant's OAuth client; google/microsoft fill in endpoints, scopes and
    mail hosts. The secret is stored encrypted and never returned. A generic app's URL on a
    non-public host is 422 `oauth_url_not_allowed` (POSTROOM_ALLOWED_PRIVATE_OAUTH_HOSTS)."""
    app = await oauth_apps.create_app(
        uow.session,
        settings=settings,
        tenant_id=principal.tenant_id,
        body=body.model_dump(mode="json", exclude_none=True),
    )
    await uow.commit()
    return OAuthAppPublic(**oauth_apps.public(app))


@router.get("", response_model=OAuthAppPage, responses=error_responses(400))
async def list_apps(
    principal: PrincipalDep,
    uow: UowDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> OAuthAppPage:
    rows, next_cursor = await oauth_apps.list_apps(
        uow.session, settings=settings, tenant_id=principal.tenant_id, limit=limit, cursor=cursor
    )
    return OAuthAppPage(
        data=[OAuthAppPublic(**oauth_apps.public(a)) for a in rows], next_cursor=next_cursor
    )


@router.get("/{app_id}", response_model=OAuthAppPublic, responses=error_responses(404))
async def get_app(app_id: uuid.UUID, principal: PrincipalDep, uow: UowDep) -> OAuthAppPublic:
    app = await oauth_apps.get_app(uow.session, principal.tenant_id, app_id)
    return OAuthAppPublic(**oauth_apps.public(app))


@router.delete(
    "/{app_id}", status_code=204, response_class=Response, responses=error_responses(404)
)
async def delete_app(app_id: uuid.UUID, principal: PrincipalDep, uow: UowDep) -> Response:
    """No new sign-ins or accounts through it; connected accounts keep their grants."""
    await oauth_apps.delete_app(uow.session, principal.tenant_id, app_id)
    await uow.commit()
    return Response(status_code=204)


@router.post("/{app_id}/authorize", response_model=AuthorizeAnswer, responses=error_responses(404))
async def authorize(
    app_id: uuid.UUID,
    body: AuthorizeRequest,
    request: Request,
    principal: PrincipalDep,
    db: DatabaseDep,
    settings: SettingsDep,
) -> AuthorizeAnswer:
    """The provider's sign-in URL (code + PKCE S256, a signed state valid 10 minutes, once).
    `redirect_to` outside the app's allowed_redirect_origins is 422 `redirect_not_allowed`."""
    url = await flow.authorize(
        db,
        settings=settings,
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        app_id=app_id,
        redirect_to=body.redirect_to,
        email=body.email,
        request_base=_base(request),
    )
    return AuthorizeAnswer(url=url)


@callback_router.get("/oauth/callback", responses=error_responses(400))
async def oauth_callback(
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    code: Annotated[str | None, Query(max_length=4096)] = None,
    state: Annotated[str | None, Query(max_length=1024)] = None,
    error: Annotated[str | None, Query(max_length=200)] = None,
) -> RedirectResponse:
    """Where the provider sends the browser (no API key: the signed state is checked).
    Redirects to `redirect_to` with `account_id`, or `error=<code>`; 400 when the state is
    invalid, expired or used (there is then nowhere safe to redirect)."""
    target = await flow.callback(
        db,
        settings=settings,
        code=code,
        state_text=state,
        error=error,
        request_base=_base(request),
    )
    return RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})
