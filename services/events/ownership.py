"""Replays act only on what the caller still owns (docs/security.md).

A webhook event (a Nylas notification) names a grant; the account that held the grant when the
event was stored may since have been deleted, and the grant connected by another tenant. A
replay of such an event must not run against the new owner: the replay is refused here, and
processing refuses too when the stored tenant is not the grant's owner any more
(services.nylas.notifications.owner_changed).
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Event, EventSource
from database.repositories.accounts import access as accounts_repo
from services.errors import Conflict
from services.nylas.values import grant_of

_GONE = (
    "The account this event belongs to no longer exists or is no longer the caller's; "
    "it cannot be replayed."
)


async def require_owned_account(
    session: AsyncSession, event: Event, *, tenant_id: uuid.UUID | None
) -> None:
    """409 unless a webhook event's account exists, is live, belongs to the event's tenant (and
    the caller's, when there is a caller) and still holds the grant the notification names.

    Other events (API jobs, schedules, push) carry their own tenant and account checks. An
    operator replaying a webhook event no tenant ever owned (an unknown grant then) may: the
    grant's owner today is its first owner.
    """
    if event.source != EventSource.nylas:
        return
    if tenant_id is None and event.tenant_id is None:
        return
    owner = event.tenant_id
    if owner is None or (tenant_id is not None and owner != tenant_id):
        raise Conflict(_GONE)
    if event.account_id is None:
        raise Conflict(_GONE)
    account = await accounts_repo.get_for_tenant(session, owner, event.account_id)
    if account is None:
        raise Conflict(_GONE)
    grant = grant_of(event.payload or {})
    if grant is not None and account.grant_id != grant:
        raise Conflict(_GONE)
