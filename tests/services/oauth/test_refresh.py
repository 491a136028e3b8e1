"""Token life (services/oauth/refresh.py) against the local OAuth2 server: refresh before
expiry, one refresher at a time, rotated refresh tokens kept, a dead grant made visible, a
dead endpoint survived."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from database.engine import Database
from database.models import Account, OAuthToken, TenantEvent
from services.oauth.endpoint import GrantRevoked
from services.oauth.grants import unseal
from services.oauth.http import OAuthEndpointUnavailable
from services.oauth.refresh import GrantTokens
from tests.api.keys import make_caller
from tests.oauth_fixtures import create_app, create_oauth_account, generic_app_body

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def grant(
    client: httpx.AsyncClient, db: Database, fresh_oauth: Any, oauth_dovecot: Any, xoauth2_smtp: Any
) -> dict[str, Any]:
    """An account whose stored token has 2 minutes left: inside the 5-minute margin."""
    caller = await make_caller(db)
    app_id = await create_app(
        client, caller.headers, generic_app_body(fresh_oauth, oauth_dovecot, xoauth2_smtp)
    )
    account_id, email = await create_oauth_account(
        client, caller.headers, fresh_oauth, app_id, ttl_s=120
    )
    return {
        "caller": caller,
        "account_id": uuid.UUID(account_id),
        "email": email,
        "server": fresh_oauth,
    }


def _tokens(db: Database, settings: Any, grant: dict[str, Any]) -> GrantTokens:
    return GrantTokens(
        db, settings, tenant_id=grant["caller"].tenant_id, account_id=grant["account_id"]
    )


async def _row(db: Database, account_id: uuid.UUID) -> OAuthToken:
    async with db.transaction() as s:
        stmt = sa.select(OAuthToken).where(OAuthToken.account_id == account_id)  # type: ignore[arg-type]
        return (await s.execute(stmt)).scalar_one()


async def test_a_token_inside_the_margin_is_refreshed_and_a_fresh_one_is_not(
    db: Database, settings: Any, grant: dict[str, Any]
) -> None:
    server = grant["server"]
    before = server.refreshes
    first = await _tokens(db, settings, grant).access_token()
    assert server.refreshes == before + 1
    assert server.valid(first) == grant["email"]
    row = await _row(db, grant["account_id"])
    assert row.expires_at is not None and row.expires_at > datetime.now(UTC) + timedelta(minutes=50)
    assert await _tokens(db, settings, grant).access_token() == first
    assert server.refreshes == before + 1


async def test_two_workers_refreshing_at_once_send_one_refresh(
    db: Database, settings: Any, grant: dict[str, Any]
) -> None:
    """Two processes' worth of engines (separate pools), the endpoint slow: one refresh."""
    server = grant["server"]
    server.refresh_delay_s = 1.0
    other = Database.from_settings(settings, pool_size=2)
    try:
        before = server.refreshes
        a, b = await asyncio.gather(
            _tokens(db, settings, grant).access_token(),
            _tokens(other, settings, grant).access_token(),
        )
    finally:
        await other.dispose()
    assert server.refreshes == before + 1
    assert a == b and server.valid(a) == grant["email"]
    assert (await _row(db, grant["account_id"])).lease_owner is None


async def test_a_rotated_refresh_token_is_stored_and_used_next_time(
    db: Database, settings: Any, grant: dict[str, Any]
) -> None:
    server = grant["server"]
    server.rotate = True
    await _tokens(db, settings, grant).access_token()
    _, stored = unseal(settings, (await _row(db, grant["account_id"])).ciphertext)
    assert server.active_refresh_tokens(grant["email"]) == [stored]
    # The old one is spent at the provider: a second refresh works only with the stored one.
    server.expire_all()
    stale = (unseal(settings, (await _row(db, grant["account_id"])).ciphertext))[0]
    again = await _tokens(db, settings, grant).access_token(refused=stale)
    assert server.valid(again) == grant["email"]
    assert (await _row(db, grant["account_id"])).generation >= 2


async def test_a_revoked_grant_makes_the_account_reauth_required_with_one_event(
    db: Database, settings: Any, grant: dict[str, Any]
) -> None:
    server = grant["server"]
    server.revoke(grant["email"])
    for _ in range(2):
        with pytest.raises(GrantRevoked):
            await _tokens(db, settings, grant).access_token()
    async with db.transaction() as s:
        account = await s.get(Account, grant["account_id"])
        events = (
            (
                await s.execute(
                    sa.select(TenantEvent).where(TenantEvent.tenant_id == grant["caller"].tenant_id)  # type: ignore[arg-type]
                )
            )
            .scalars()
            .all()
        )
    assert account is not None and account.status == "reauth_required"
    assert [e.type for e in events] == ["account.auth_failed"]
    payload = events[0].data["account"]
    assert payload["id"] == str(grant["account_id"]) and payload["status"] == "reauth_required"
    assert "rt-" not in str(events[0].data) and "at-" not in str(events[0].data)


async def test_a_token_endpoint_that_is_down_costs_no_reauth(
    db: Database, settings: Any, grant: dict[str, Any]
) -> None:
    server = grant["server"]
    server.down = True
    with pytest.raises(OAuthEndpointUnavailable) as failed:
        await _tokens(db, settings, grant).access_token()
    assert failed.value.transient
    # With the production retry policy a sync's 5 retries span more than a minute of outage.
    from worker.policy import backoff_s

    prod = settings.model_copy(
        update={"retry_base_s": 5.0, "retry_factor": 2.0, "retry_cap_s": 600.0}
    )
    waits = [backoff_s(n, prod, hint=failed.value.retry_after) for n in range(1, 6)]
    assert sum(waits) >= 60
    assert (await _row(db, grant["account_id"])).lease_owner is None
    async with db.transaction() as s:
        account = await s.get(Account, grant["account_id"])
    assert account is not None and account.status == "active"
    server.down = False
    assert server.valid(await _tokens(db, settings, grant).access_token()) == grant["email"]


async def test_a_token_request_is_checked_against_the_destination_policy_when_it_is_made(
    settings: Any, fresh_oauth: Any
) -> None:
    """An app accepted while its host was allowed is refused at call time once it is not:
    no request leaves (a DNS answer that changed after the app was created is caught too)."""
    from services.oauth import endpoint
    from services.oauth.http import OAuthUrlNotAllowed
    from tests.oauth_server import CLIENT_ID, CLIENT_SECRET

    client = endpoint.Client(f"{fresh_oauth.url}/token", CLIENT_ID, CLIENT_SECRET)
    _, refresh, _ = fresh_oauth.issue("policy@example.com")
    strict = settings.model_copy(update={"allowed_private_oauth_hosts": ""})
    before = fresh_oauth.refreshes
    with pytest.raises(OAuthUrlNotAllowed):
        await endpoint.refresh(client, refresh, strict)
    assert fresh_oauth.refreshes == before
    tokens = await endpoint.refresh(client, refresh, settings)
    assert fresh_oauth.refreshes == before + 1 and fresh_oauth.valid(tokens.access_token)
