"""IMAP AUTHENTICATE, POP3 AUTH and SMTP AUTH with OAuth2 tokens, against Dovecot's oauth2
passdb and an XOAUTH2 aiosmtpd that both ask the local OAuth2 server about every token."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from database.engine import Database
from database.repositories.accounts import access as accounts_repo
from services.accounts.access import imap_config, pop3_config
from services.accounts.credentials import decrypted
from services.imap.client import ImapClient
from services.outbound.smtp import SmtpConfig, SmtpConnection
from services.pop3.client import Pop3Client
from tests.api.keys import make_caller
from tests.oauth_fixtures import create_app, create_oauth_account, generic_app_body

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def setup(
    client: httpx.AsyncClient, db: Database, fresh_oauth: Any, oauth_dovecot: Any, xoauth2_smtp: Any
) -> dict[str, Any]:
    caller = await make_caller(db)
    app_id = await create_app(
        client, caller.headers, generic_app_body(fresh_oauth, oauth_dovecot, xoauth2_smtp)
    )
    return {"caller": caller, "app_id": app_id, "server": fresh_oauth, "smtp": xoauth2_smtp}


async def _account(db: Database, caller: Any, account_id: str) -> Any:
    async with db.transaction() as s:
        return await accounts_repo.get_for_tenant(s, caller.tenant_id, uuid.UUID(account_id))


async def _imap(db: Database, settings: Any, account: Any) -> ImapClient:
    async with db.transaction() as s:
        return ImapClient(await imap_config(s, settings, account))


async def test_imap_logs_in_with_xoauth2_and_dovecot_checks_the_token(
    client: httpx.AsyncClient, db: Database, settings: Any, setup: dict[str, Any]
) -> None:
    server = setup["server"]
    account_id, _ = await create_oauth_account(
        client, setup["caller"].headers, server, setup["app_id"]
    )
    account = await _account(db, setup["caller"], account_id)
    before = server.introspections
    async with await _imap(db, settings, account) as imap:
        boxes = await imap.list_mailboxes()
    assert any(b.name == "INBOX" for b in boxes)
    assert server.introspections > before
    assert server.refreshes == 0  # the stored token was fresh


class _BearerOnly(ImapClient):
    """Dovecot offers both; a server that offers only OAUTHBEARER gets RFC 7628."""

    async def _handshake(self, context: Any, server_name: str) -> None:
        await super()._handshake(context, server_name)
        self.capabilities.discard("AUTH=XOAUTH2")


async def test_imap_uses_oauthbearer_where_xoauth2_is_not_offered(
    client: httpx.AsyncClient, db: Database, settings: Any, setup: dict[str, Any]
) -> None:
    account_id, _ = await create_oauth_account(
        client, setup["caller"].headers, setup["server"], setup["app_id"]
    )
    account = await _account(db, setup["caller"], account_id)
    async with db.transaction() as s:
        config = await imap_config(s, settings, account)
    async with _BearerOnly(config) as imap:
        assert await imap.list_mailboxes()


async def test_pop3_logs_in_with_xoauth2(
    client: httpx.AsyncClient, db: Database, settings: Any, setup: dict[str, Any]
) -> None:
    account_id, _ = await create_oauth_account(
        client, setup["caller"].headers, setup["server"], setup["app_id"], provider="pop3"
    )
    account = await _account(db, setup["caller"], account_id)
    async with db.transaction() as s:
        config = await pop3_config(s, settings, account)
    async with Pop3Client(config) as pop:
        assert pop.login_method == "XOAUTH2"
        assert await pop.uidl() == []


async def test_smtp_logs_in_with_xoauth2(
    client: httpx.AsyncClient, db: Database, settings: Any, setup: dict[str, Any]
) -> None:
    account_id, _ = await create_oauth_account(
        client, setup["caller"].headers, setup["server"], setup["app_id"]
    )
    account = await _account(db, setup["caller"], account_id)
    async with db.transaction() as s:
        ciphertext = await accounts_repo.credential_ciphertext(
            s, tenant_id=account.tenant_id, account_id=account.id
        )
    assert ciphertext is not None
    config = SmtpConfig.from_credential(decrypted(db, settings, account, ciphertext)["smtp"])
    before = setup["smtp"].handler.logins
    async with SmtpConnection(config) as conn:
        await conn.connect()
    assert setup["smtp"].handler.logins == before + 1


async def test_a_token_the_server_refuses_is_refreshed_once_and_the_login_retried(
    client: httpx.AsyncClient, db: Database, settings: Any, setup: dict[str, Any]
) -> None:
    """Our clock says the token is fresh; the provider says it expired (401 challenge)."""
    server = setup["server"]
    account_id, _ = await create_oauth_account(
        client, setup["caller"].headers, server, setup["app_id"]
    )
    account = await _account(db, setup["caller"], account_id)
    server.expire_all()
    before = server.refreshes
    async with await _imap(db, settings, account) as imap:
        assert await imap.list_mailboxes()
    assert server.refreshes == before + 1
    # The new token is stored: the next login needs no refresh.
    async with await _imap(db, settings, account) as imap:
        assert await imap.list_mailboxes()
    assert server.refreshes == before + 1


async def test_an_account_without_an_access_token_refreshes_at_first_login(
    client: httpx.AsyncClient, db: Database, settings: Any, setup: dict[str, Any]
) -> None:
    server = setup["server"]
    account_id, _ = await create_oauth_account(
        client, setup["caller"].headers, server, setup["app_id"], with_access=False
    )
    account = await _account(db, setup["caller"], account_id)
    before = server.refreshes
    async with await _imap(db, settings, account) as imap:
        assert await imap.list_mailboxes()
    assert server.refreshes == before + 1


async def test_verify_logs_in_with_the_bodys_grant(
    client: httpx.AsyncClient, db: Database, setup: dict[str, Any]
) -> None:
    server = setup["server"]
    email = f"v{uuid.uuid4().hex[:8]}@example.com"
    _, refresh, _ = server.issue(email)
    body = {
        "provider": "imap",
        "email": email,
        "oauth2": {"app_id": setup["app_id"], "refresh_token": refresh},
    }
    r = await client.post("/v1/accounts/verify", json=body, headers=setup["caller"].headers)
    assert r.status_code == 200, r.text
    assert r.json()["ok"] is True, r.json()
    server.revoke(email)
    body["oauth2"]["refresh_token"] = refresh
    r = await client.post("/v1/accounts/verify", json=body, headers=setup["caller"].headers)
    assert r.json()["ok"] is False
    assert refresh not in r.text


async def test_an_oauth_accounts_servers_cannot_be_patched_to_a_password(
    client: httpx.AsyncClient, setup: dict[str, Any]
) -> None:
    account_id, email = await create_oauth_account(
        client, setup["caller"].headers, setup["server"], setup["app_id"]
    )
    server = {
        "host": "127.0.0.1",
        "port": 993,
        "security": "tls",
        "username": email,
        "password": "p",
    }
    r = await client.patch(
        f"/v1/accounts/{account_id}", json={"imap": server}, headers=setup["caller"].headers
    )
    assert r.status_code == 409


async def test_long_tokens_fit_imap_sasl_ir_and_pop3_after_the_challenge(
    client: httpx.AsyncClient, db: Database, settings: Any, setup: dict[str, Any]
) -> None:
    """A Microsoft-sized token: too long for a POP3 AUTH line (255 octets, RFC 5034), so it
    goes after the server's `+`; IMAP still sends it on the command line (SASL-IR)."""
    setup["server"].token_size = 1200
    caller, server, app_id = setup["caller"], setup["server"], setup["app_id"]
    imap_id, _ = await create_oauth_account(client, caller.headers, server, app_id)
    pop3_id, _ = await create_oauth_account(client, caller.headers, server, app_id, provider="pop3")
    async with await _imap(db, settings, await _account(db, caller, imap_id)) as imap:
        assert await imap.list_mailboxes()
    async with db.transaction() as s:
        config = await pop3_config(s, settings, await _account(db, caller, pop3_id))
    async with Pop3Client(config) as pop:
        assert await pop.uidl() == []
