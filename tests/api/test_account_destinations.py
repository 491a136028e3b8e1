"""/v1/accounts: mail hosts must be public (or allowed), grant ids are plain ids, and SMTP
credentials are optional together (API.md "Additions" / Accounts)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from database.models import Account, Credential
from services.crypto import decrypt_json
from tests.api.keys import imap_account, make_caller

INWARD = [
    ("127.0.0.1", 6379),  # a Redis on loopback
    ("169.254.169.254", 80),  # cloud metadata
    ("2130706433", 993),  # 127.0.0.1 in decimal
    ("::ffff:127.0.0.1", 993),  # IPv4-mapped
    ("0x7f.1", 993),  # hex
    ("localhost", 143),  # a name that resolves to loopback
    ("10.1.2.3", 25),  # private
    ("100.64.0.7", 587),  # CGNAT
]


@pytest.fixture
async def strict_client(settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The API as production runs it: POSTROOM_ALLOWED_PRIVATE_MAIL_HOSTS empty."""
    from api.app import create_app

    application = create_app(settings.model_copy(update={"allowed_private_mail_hosts": ""}))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://postroom.test") as c:
            yield c


def _with(role: str, host: str, port: int, **server: Any) -> dict[str, Any]:
    body = imap_account()
    body[role].update(host=host, port=port, **server)
    return body


def _refused(r: httpx.Response, host: str, port: int) -> None:
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "mail_host_not_allowed"
    assert "not allowed" in error["message"] and "non-public" in error["message"]
    # The answer names the rule, not the tenant's input back.
    assert host not in error["message"] and str(port) not in error["message"]


async def _stored(db: Any, tenant_id: Any) -> tuple[list[Account], list[Credential]]:
    """The accounts and credentials of the test's tenant."""
    accounts_of = sa.select(Account).where(Account.tenant_id == tenant_id)
    credentials_of = sa.select(Credential).where(Credential.tenant_id == tenant_id)
    async with db.sessionmaker() as s:
        accounts = list((await s.execute(accounts_of)).scalars())
        credentials = list((await s.execute(credentials_of)).scalars())
    return accounts, credentials


@pytest.mark.parametrize("role", ["imap", "smtp"])
@pytest.mark.parametrize(("host", "port"), INWARD)
async def test_create_refuses_inward_hosts(
    strict_client: httpx.AsyncClient, db: Any, role: str, host: str, port: int
) -> None:
    caller = await make_caller(db)
    r = await strict_client.post(
        "/v1/accounts", json=_with(role, host, port), headers=caller.headers
    )
    _refused(r, host, port)
    assert await _stored(db, caller.tenant_id) == ([], [])


@pytest.mark.parametrize("role", ["imap", "smtp"])
@pytest.mark.parametrize(("host", "port"), INWARD)
async def test_patch_refuses_inward_hosts_and_keeps_the_old_settings(
    strict_client: httpx.AsyncClient, db: Any, settings: Any, role: str, host: str, port: int
) -> None:
    caller = await make_caller(db)
    created = await strict_client.post("/v1/accounts", json=imap_account(), headers=caller.headers)
    assert created.status_code == 201, created.text
    server = {**imap_account()[role], "host": host, "port": port}
    r = await strict_client.patch(
        f"/v1/accounts/{created.json()['id']}", json={role: server}, headers=caller.headers
    )
    _refused(r, host, port)
    [account], [credential] = await _stored(db, caller.tenant_id)
    assert account.settings[role]["host"] == "mail.example.com"
    assert decrypt_json(settings, credential.ciphertext)[role]["host"] == "mail.example.com"


async def test_the_allow_list_opens_loopback_but_not_metadata(client, db) -> None:
    """The suite's own setting (127.0.0.0/8,::1), as the local .env has it."""
    caller = await make_caller(db)
    ok = await client.post(
        "/v1/accounts", json=_with("imap", "127.0.0.1", 6379), headers=caller.headers
    )
    assert ok.status_code == 201, ok.text
    mapped = await client.post(
        "/v1/accounts", json=_with("smtp", "::ffff:127.0.0.1", 25), headers=caller.headers
    )
    assert mapped.status_code == 201, mapped.text
    metadata = await client.post(
        "/v1/accounts", json=_with("imap", "169.254.169.254", 993), headers=caller.headers
    )
    _refused(metadata, "169.254.169.254", 993)


async def test_a_name_that_does_not_resolve_yet_is_accepted(strict_client, db) -> None:
    # Checked again at connect time, against the address actually connected to.
    caller = await make_caller(db)
    r = await strict_client.post(
        "/v1/accounts", json=_with("imap", "imap.not-yet.invalid", 993), headers=caller.headers
    )
    assert r.status_code == 201, r.text


# -- grant ids ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "grant_id",
    ["zz/../grant-victim", "a b", "g" * 201, "", "grant?x=1", "grant%2Fx", "grant\n", "grånt", "."],
)
async def test_grant_ids_that_are_not_plain_ids_are_422(
    client, db, fake_nylas, grant_id: str
) -> None:
    caller = await make_caller(db)
    fake_nylas.put_grant("grant-victim", "victim@example.com")
    body = {"provider": "nylas", "email": "victim@example.com", "nylas": {"grant_id": grant_id}}
    r = await client.post("/v1/accounts", json=body, headers=caller.headers)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "validation_error"
    assert fake_nylas.requests_to(r"/v3/grants") == []
    assert await _stored(db, caller.tenant_id) == ([], [])


async def test_a_200_character_grant_id_is_accepted(client, db, fake_nylas) -> None:
    caller = await make_caller(db)
    grant_id = "A-_9" * 50
    fake_nylas.put_grant(grant_id, "long@example.com")
    body = {"provider": "nylas", "email": "long@example.com", "nylas": {"grant_id": grant_id}}
    r = await client.post("/v1/accounts", json=body, headers=caller.headers)
    assert r.status_code == 201, r.text


async def test_a_grant_answered_under_another_id_is_not_attached(client, db, fake_nylas) -> None:
    """Nylas (or a proxy on the way) answering with another grant than the one asked for."""
    caller = await make_caller(db)
    fake_nylas.put_grant("grant-victim", "victim@example.com")
    with fake_nylas.state.lock:
        fake_nylas.state.grants["alias-1"] = dict(fake_nylas.state.grants["grant-victim"])
    body = {"provider": "nylas", "email": "victim@example.com", "nylas": {"grant_id": "alias-1"}}
    r = await client.post("/v1/accounts", json=body, headers=caller.headers)
    assert r.status_code == 404, r.text
    assert await _stored(db, caller.tenant_id) == ([], [])


# -- SMTP credentials, optional together ----------------------------------------------------


@pytest.mark.parametrize("missing", ["username", "password"])
async def test_smtp_username_without_password_or_the_reverse_is_422(client, db, missing) -> None:
    caller = await make_caller(db)
    body = imap_account()
    del body["smtp"][missing]
    r = await client.post("/v1/accounts", json=body, headers=caller.headers)
    assert r.status_code == 422, r.text
    assert "smtp.username and smtp.password go together" in r.text
    acc = (await client.post("/v1/accounts", json=imap_account(), headers=caller.headers)).json()
    r = await client.patch(
        f"/v1/accounts/{acc['id']}", json={"smtp": body["smtp"]}, headers=caller.headers
    )
    assert r.status_code == 422, r.text


async def test_smtp_without_credentials_is_a_relay_account(client, db, settings) -> None:
    caller = await make_caller(db)
    body = imap_account(password="imap-pass-1")
    for key in ("username", "password"):
        del body["smtp"][key]
    r = await client.post("/v1/accounts", json=body, headers=caller.headers)
    assert r.status_code == 201, r.text
    [account], [credential] = await _stored(db, caller.tenant_id)
    assert account.settings["smtp"] == {
        "host": "mail.example.com",
        "port": 587,
        "security": "starttls",
    }
    secrets = decrypt_json(settings, credential.ciphertext)
    assert "username" not in secrets["smtp"] and "password" not in secrets["smtp"]
    assert secrets["imap"]["password"] == "imap-pass-1"
    # And back: a PATCH may add credentials to it.
    with_auth = {**body["smtp"], "username": "ana", "password": "smtp-pass-2"}
    r = await client.patch(
        f"/v1/accounts/{account.id}", json={"smtp": with_auth}, headers=caller.headers
    )
    assert r.status_code == 200, r.text
    [credential] = (await _stored(db, caller.tenant_id))[1]
    assert decrypt_json(settings, credential.ciphertext)["smtp"]["password"] == "smtp-pass-2"
