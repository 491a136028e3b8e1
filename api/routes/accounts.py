"""/v1/accounts: connect, list, read, change and remove mail accounts (API.md "Accounts")."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, Response

from api.auth import PrincipalDep
from api.deps import SettingsDep, UowDep
from api.ratelimit import spend_verify_budget
from api.schemas.accounts import (
    AccountCreate,
    AccountPage,
    AccountPublic,
    AccountUpdate,
    FolderList,
    FolderPublic,
    ServerCheck,
    VerifyResult,
)
from api.schemas.common import error_responses
from database.models import Account, OAuthApp
from services.accounts import admin as accounts
from services.accounts import oauth_connect
from services.accounts import verify as account_verify
from services.events.unit_of_work import UnitOfWork

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


async def _oauth_app(
    uow: UnitOfWork, tenant_id: uuid.UUID, data: dict[str, Any]
) -> OAuthApp | None:
    """The OAuth app an `oauth2` body names (404 when not the tenant's); the read is committed
    so no transaction stays open while the servers are tried."""
    if not data.get("oauth2"):
        return None
    app = await oauth_connect.app_for(uow.session, tenant_id, uuid.UUID(data["oauth2"]["app_id"]))
    await uow.commit()
    return app


@router.post("", status_code=201, response_model=AccountPublic, responses=error_responses(404, 409))
async def create_account(
    request: Request,
    body: Annotated[AccountCreate, Body()],
    principal: PrincipalDep,
    uow: UowDep,
    settings: SettingsDep,
    verify: Annotated[bool, Query(description="log in to the servers before saving")] = False,
) -> AccountPublic:
    """Connect an IMAP+SMTP or POP3+SMTP account or a Nylas grant; secrets are stored
    encrypted only.

    A mail host that resolves to a non-public address answers 422 `mail_host_not_allowed`
    (unless POSTROOM_ALLOWED_PRIVATE_MAIL_HOSTS lists it); SMTP without username and password
    sends without AUTH. With `verify=true` the servers are logged in to first, and a failure
    is 422 `account_verification_failed` (nothing saved) with one entry per server in
    `details`.
    """
    data = body.model_dump(mode="json")
    if verify:
        proved = await account_verify.proved_hosts(uow.session, settings, principal.tenant_id)
        app = await _oauth_app(uow, principal.tenant_id, data)  # commits when there is one
        if app is None:
            await uow.session.rollback()  # no transaction open while servers are talked to
        targets = account_verify.target_hosts(settings, data, app)
        await spend_verify_budget(
            request, principal.tenant_id, [h for h in targets if h not in proved]
        )
        checks = await account_verify.verify_account(
            settings, data, nylas=request.app.state.nylas, oauth_app=app, proved=proved
        )
        if not account_verify.all_ok(checks):
            raise account_verify.AccountVerificationFailed(checks)
    account = await accounts.create_account(
        uow.session,
        settings=settings,
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        body=data,
        nylas=request.app.state.nylas,
    )
    await uow.commit()
    return account_public(account)


@router.post("/verify", response_model=VerifyResult, responses=error_responses(404, 429))
async def verify_account(
    request: Request,
    body: Annotated[AccountCreate, Body()],
    principal: PrincipalDep,
    uow: UowDep,
    settings: SettingsDep,
) -> VerifyResult:
    """Log in to the account's servers without saving anything: per server, what worked.

    The same body as create. A host the destination rule refuses is 422
    `mail_host_not_allowed` before any connection. Nylas: the grant is looked up."""
    data = body.model_dump(mode="json")
    proved = await account_verify.proved_hosts(uow.session, settings, principal.tenant_id)
    # Nothing is written: the read transaction ends before any server is talked to.
    app = await _oauth_app(uow, principal.tenant_id, data)  # commits when there is one
    if app is None:
        await uow.session.rollback()
    # Every check spends the tenant's budget; a host the tenant has proved spends no host budget.
    targets = account_verify.target_hosts(settings, data, app)
    await spend_verify_budget(request, principal.tenant_id, [h for h in targets if h not in proved])
    checks = await account_verify.verify_account(
        settings, data, nylas=request.app.state.nylas, oauth_app=app, proved=proved
    )
    return VerifyResult(
        ok=account_verify.all_ok(checks),
        checks={k: ServerCheck(ok=c.ok, message=c.message) for k, c in checks.items()},
    )


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
