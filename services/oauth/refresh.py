"""A usable access token for an account, refreshed by one holder at a time across every host.

`GrantTokens.access_token()` answers the stored token while it has more than the margin
(POSTROOM_OAUTH_REFRESH_MARGIN_S, at least 5 minutes, plus jitter so a fleet of accounts
connected together does not refresh together) left; otherwise it refreshes. `refused=` asks
again after a server refused a token as expired: a token other than the refused one is
answered as it is (someone refreshed meanwhile), else this one is refreshed.

Single flight: the oauth_token row carries a lease (owner, until). Taking it is a short
transaction (SELECT ... FOR UPDATE, UPDATE, COMMIT); the token endpoint is called with no
transaction open; the result is written in a new short transaction that also gives the lease
back. A rotated refresh token (Microsoft, and any provider that rotates) is in that same write,
before the new access token is handed to anyone. Others wait for the lease to end and take
the new token. A lease outlives the longest call (2 x the HTTP timeout + 10 s), so a holder
that died frees the account soon after.

Outcomes: `invalid_grant` marks the account `reauth_required` and records
`account.auth_failed` in the same transaction; an endpoint that is down or answers 5xx/429
is OAuthEndpointUnavailable (transient: the task retries with backoff), and the account stays
active.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from datetime import timedelta

import structlog

from database.engine import Database
from database.models import AccountStatus
from database.repositories.accounts import access as accounts_repo
from database.repositories.oauth import apps as apps_repo
from database.repositories.oauth import tokens as repo
from services.errors import BadCredentials, ProviderTemporaryError
from services.oauth import endpoint
from services.oauth.apps import client_of
from services.oauth.grants import seal, unseal
from services.tenant_events.emit import TenantEventType, emit
from services.tenant_events.payloads import account_payload
from settings import Settings

log = structlog.get_logger(__name__)
_POLL_S = 0.1


class GrantTokens:
    """The access tokens of one account's grant (what the mail clients log in with)."""

    def __init__(
        self, db: Database, settings: Settings, *, tenant_id: uuid.UUID, account_id: uuid.UUID
    ) -> None:
        self.db = db
        self.settings = settings
        self.tenant_id = tenant_id
        self.account_id = account_id
        self.refreshes = 0  # refreshes this object made (tests count them)

    def __repr__(self) -> str:  # never a token
        return f"GrantTokens(account_id={self.account_id})"

    @property
    def lease_s(self) -> float:
        return 2 * self.settings.oauth_http_timeout_s + 10

    async def access_token(self, *, refused: str | None = None) -> str:
        margin = timedelta(
            seconds=self.settings.oauth_refresh_margin_s
            + random.uniform(0, self.settings.oauth_refresh_jitter_s)
        )
        give_up = time.monotonic() + self.lease_s + 5
        waited = False
        while True:
            async with self.db.transaction() as s:
                row = await repo.read(
                    s, tenant_id=self.tenant_id, account_id=self.account_id, lock=True
                )
                if row is None:
                    raise BadCredentials("The account has no OAuth2 grant stored.")
                now = await repo.db_now(s)
                access, refresh_token = unseal(self.settings, row.ciphertext)
                if access is not None and refused is None:
                    if row.expires_at is None or row.expires_at - now > margin:
                        return self._answer(access, waited)
                elif access is not None and access != refused:
                    return self._answer(access, waited)  # refreshed by another since
                busy = row.lease_owner is not None and (row.lease_until or now) > now
                if not busy:
                    owner = uuid.uuid4()
                    await repo.take_lease(
                        s, account_id=self.account_id, owner=owner, lease_s=self.lease_s
                    )
                    app = await apps_repo.get_any(s, self.tenant_id, row.app_id)
                    break
            if time.monotonic() > give_up:
                raise ProviderTemporaryError("Another worker is still refreshing the token.")
            waited = True
            await asyncio.sleep(_POLL_S)
        if app is None:
            await self._release(owner)
            raise BadCredentials("The account's OAuth app no longer exists.")
        return await self._refresh(owner, client_of(self.settings, app), refresh_token)

    def _answer(self, access: str, waited: bool) -> str:
        if waited:  # another holder's refresh served this caller (single flight at work)
            log.info("oauth_refresh_waited", account_id=str(self.account_id))
        return access

    async def _refresh(self, owner: uuid.UUID, client: endpoint.Client, refresh_token: str) -> str:
        try:
            self.refreshes += 1
            tokens = await endpoint.refresh(client, refresh_token, self.settings)
        except endpoint.GrantRevoked as exc:
            await self._reauth(owner, exc.message)
            raise
        except BaseException:
            await asyncio.shield(self._release(owner))
            raise
        async with self.db.transaction() as s:
            generation = await repo.store_refresh(
                s,
                account_id=self.account_id,
                owner=owner,
                ciphertext=seal(
                    self.settings,
                    access_token=tokens.access_token,
                    refresh_token=tokens.refresh_token or refresh_token,
                ),
                expires_at=tokens.expires_at,
            )
        log.info(
            "oauth_token_refreshed",
            account_id=str(self.account_id),
            generation=generation,
            rotated=tokens.refresh_token is not None,
        )
        if generation is None:
            # Only when this call outlasted its lease: the token is valid, the row kept another.
            log.warning("oauth_refresh_lease_lost", account_id=str(self.account_id))
        return tokens.access_token

    async def _release(self, owner: uuid.UUID) -> None:
        async with self.db.transaction() as s:
            await repo.release(s, account_id=self.account_id, owner=owner)

    async def _reauth(self, owner: uuid.UUID, reason: str) -> None:
        """reauth_required and account.auth_failed, once, with the lease given back."""
        async with self.db.transaction() as s:
            await repo.read(s, tenant_id=self.tenant_id, account_id=self.account_id, lock=True)
            await repo.release(s, account_id=self.account_id, owner=owner)
            account = await accounts_repo.get_for_tenant(s, self.tenant_id, self.account_id)
            if account is None or account.status != AccountStatus.active:
                return
            await accounts_repo.set_status(
                s, self.account_id, AccountStatus.reauth_required, reason
            )
            await s.refresh(account)
            await emit(
                s,
                tenant_id=self.tenant_id,
                type=TenantEventType.account_auth_failed,
                data={"account": account_payload(account)},
            )
        log.warning("oauth_grant_revoked", account_id=str(self.account_id))
