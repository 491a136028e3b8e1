"""/v1/accounts: connect, list, read, change and remove mail accounts (API.md "Accounts")."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Query, Request, Response

from api.auth import PrincipalDep
from api.deps import SettingsDep, UowDep
from api.schemas.accounts import (
    AccountCreate,
    AccountPage,
    AccountPublic,
    AccountUpdate,
    FolderList,
    FolderPublic,
)
from api.schemas.common import error_responses
from database.models import Account
from services import accounts

router = APIRouter(prefix="/v1/accounts", tags=["accounts"], responses=error_responses(401, 422))


def account_public(a: Account) -> AccountPublic:
    return AccountPublic(
        id=str(a.id),
        provider=a.provider,
        email=a.email,
        status=a.status,  # type: ignore[arg-type]
        sync_interval_s=a.sync_interval_s,
        last_sync_at=a.last_sync_at,
        created_at=a.created_at,
    )


@router.post("", status_code=201, response_model=AccountPublic, responses=error_responses(404, 409))
async def create_account(
    request: Request,
    body: Annotated[AccountCreate, Body()],
    principal: PrincipalDep,
    uow: UowDep,
    settings: SettingsDep,
) -> AccountPublic:
    """Connect an IMAP+SMTP account or a Nylas grant; secrets are stored encrypted only.

    A mail host that resolves to a non-public address answers 422 `mail_host_not_allowed`
    (unless POSTROOM_ALLOWED_PRIVATE_MAIL_HOSTS lists it); SMTP without username and password
    sends without AUTH.
    """
    account = await accounts.create_account(
        uow.session,
        settings=settings,
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        body=body.model_dump(mode="json"),
        nylas=request.app.state.nylas,
    )
    await uow.commit()
    return account_public(account)


@router.get("", response_model=AccountPage, responses=error_responses(400))
async def list_accounts(
    principal: PrincipalDep,
    uow: UowDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> AccountPage:
    """The tenant's live accounts, newest first."""
    rows, next_cursor = await accounts.list_accounts(
        uow.session, settings=settings, tenant_id=principal.tenant_id, limit=limit, cursor=cursor
    )
    return AccountPage(data=[account_public(a) for a in rows], next_cursor=next_cursor)


@router.get("/{account_id}", response_model=AccountPublic, responses=error_responses(404))
async def get_account(account_id: uuid.UUID, principal: PrincipalDep, uow: UowDep) -> AccountPublic:
    return account_public(await accounts.get_account(uow.session, principal.tenant_id, account_id))


@router.patch("/{account_id}", response_model=AccountPublic, responses=error_responses(404, 409))
async def update_account(
    account_id: uuid.UUID,
    body: AccountUpdate,
    principal: PrincipalDep,
    uow: UowDep,
    settings: SettingsDep,
) -> AccountPublic:
    """Change the sync interval, enable/disable, or replace IMAP/SMTP settings.

    New IMAP/SMTP hosts pass the same check as on create (422 `mail_host_not_allowed`).
    """
    account = await accounts.update_account(
        uow.session,
        settings=settings,
        tenant_id=principal.tenant_id,
        account_id=account_id,
        changes={
            k: v for k, v in body.model_dump(mode="json").items() if k in body.model_fields_set
        },
    )
    await uow.commit()
    return account_public(account)


@router.delete(
    "/{account_id}", status_code=204, response_class=Response, responses=error_responses(404)
)
async def delete_account(account_id: uuid.UUID, principal: PrincipalDep, uow: UowDep) -> Response:
    """Soft delete: the account stops syncing and its messages stop being listed."""
    await accounts.delete_account(uow.session, principal.tenant_id, account_id)
    await uow.commit()
    return Response(status_code=204)


@router.get("/{account_id}/folders", response_model=FolderList, responses=error_responses(404))
async def list_folders(account_id: uuid.UUID, principal: PrincipalDep, uow: UowDep) -> FolderList:
    rows = await accounts.list_folders(uow.session, principal.tenant_id, account_id)
    return FolderList(
        data=[FolderPublic(id=str(i), name=n, role=r, message_count=c) for i, n, r, c in rows]
    )
