"""POP3 accounts through /v1/accounts, and verification before saving: POST /v1/accounts/verify
and ?verify=true, against Dovecot (IMAP, POP3) and aiosmtpd, with their banners kept out."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from database.models import Account, Credential
from services.crypto import decrypt_json
from tests.api.keys import make_caller, make_synced_account
from tests.banner_server import BANNER, assert_no_peer_words, banner_server
from tests.imap_fixtures import GREETING, PASSWORD, Dovecot
from tests.peers import free_port
from tests.smtp_fixtures import PASSWORD as SMTP_PASSWORD
from tests.smtp_fixtures import USERNAME as SMTP_USERNAME
from tests.smtp_fixtures import Handler, _authenticator

banner_server = banner_server
SMTP_BANNER = "smtp-ident-4b2d91"


@pytest.fixture
def smtp_port() -> Iterator[int]:
    """aiosmtpd with AUTH and a banner of its own, which no answer may repeat."""
    port = free_port()
    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=port,
        ident=SMTP_BANNER,
        authenticator=_authenticator,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    yield port
    controller.stop()


@pytest.fixture
async def strict_client(settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The API as production runs it: POSTROOM_ALLOWED_PRIVATE_MAIL_HOSTS empty."""
    from api.app import create_app

    application = create_app(settings.model_copy(update={"allowed_private_mail_hosts": ""}))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://postroom.test") as c:
            yield c


def _body(
    provider: str, dovecot: Dovecot, user: str, smtp_port: int, **inbound: Any
) -> dict[str, Any]:
    port = dovecot.pop3_port if provider == "pop3" else dovecot.port
    return {
        "provider": provider,
        "email": user,
        provider: {
            "host": "127.0.0.1",
            "port": port,
            "security": "none",
            "username": user,
            "password": PASSWORD,
            **inbound,
        },
        "smtp": {
            "host": "127.0.0.1",
            "port": smtp_port,
            "security": "none",
            "username": SMTP_USERNAME,
            "password": SMTP_PASSWORD,
        },
        "sync_interval_s": 300,
    }


def _quiet(text: str) -> None:
    """No word of a foreign server in an answer."""
    for word in (GREETING, "Dovecot", SMTP_BANNER, "Authentication failed", "535 5.7.8", "ERR"):
        assert word not in text, text


async def _accounts(db: Any, tenant_id: Any) -> list[Account]:
    query = sa.select(Account).where(Account.tenant_id == tenant_id)
    async with db.sessionmaker() as s:
        return list((await s.execute(query)).scalars())


async def test_create_pop3_account_stores_its_secrets_encrypted(
    client: Any, db: Any, settings: Any, dovecot: Dovecot, mailbox_user: str, smtp_port: int
) -> None:
    caller = await make_caller(db)
    body = _body("pop3", dovecot, mailbox_user, smtp_port)

    r = await client.post("/v1/accounts", json=body, headers=caller.headers)

    assert r.status_code == 201, r.text
    assert r.json()["provider"] == "pop3" and PASSWORD not in r.text
    got = await client.get(f"/v1/accounts/{r.json()['id']}", headers=caller.headers)
    assert got.json()["provider"] == "pop3"
    async with db.sessionmaker() as s:
        cred = (
            await s.execute(sa.select(Credential).where(Credential.tenant_id == caller.tenant_id))
        ).scalar_one()
        account = (
            await s.execute(sa.select(Account).where(Account.tenant_id == caller.tenant_id))
        ).scalar_one()
    secrets = decrypt_json(settings, cred.ciphertext)
    assert secrets["pop3"]["password"] == PASSWORD and PASSWORD not in cred.ciphertext
    assert secrets["smtp"]["username"] == SMTP_USERNAME
    assert account.settings["pop3"] == {
        "host": "127.0.0.1",
        "port": dovecot.pop3_port,
        "security": "none",
        "username": mailbox_user,
    }


async def test_pop3_account_takes_pop3_settings_on_patch_but_not_imap(
    client: Any, db: Any, settings: Any, dovecot: Dovecot, mailbox_user: str, smtp_port: int
) -> None:
    caller = await make_caller(db)
    body = _body("pop3", dovecot, mailbox_user, smtp_port)
    account = (await client.post("/v1/accounts", json=body, headers=caller.headers)).json()
    changed = {**body["pop3"], "password": "new-pass"}

    ok = await client.patch(
        f"/v1/accounts/{account['id']}", json={"pop3": changed}, headers=caller.headers
    )
    wrong = await client.patch(
        f"/v1/accounts/{account['id']}", json={"imap": changed}, headers=caller.headers
    )

    assert ok.status_code == 200, ok.text
    assert wrong.status_code == 409 and "no IMAP settings" in wrong.json()["error"]["message"]
    async with db.sessionmaker() as s:
        cred = (
            await s.execute(sa.select(Credential).where(Credential.tenant_id == caller.tenant_id))
        ).scalar_one()
    assert decrypt_json(settings, cred.ciphertext)["pop3"]["password"] == "new-pass"


@pytest.mark.parametrize("provider", ["pop3", "imap"])
async def test_verify_with_good_credentials_is_ok_and_saves_nothing(
    client: Any, db: Any, dovecot: Dovecot, mailbox_user: str, smtp_port: int, provider: str
) -> None:
    caller = await make_caller(db)

    r = await client.post(
        "/v1/accounts/verify",
        json=_body(provider, dovecot, mailbox_user, smtp_port),
        headers=caller.headers,
    )

    assert r.status_code == 200, r.text
    role = provider.upper()
    assert r.json() == {
        "ok": True,
        "checks": {
            provider: {"ok": True, "message": f"Logged in to the {role} server."},
            "smtp": {"ok": True, "message": "Logged in to the SMTP server."},
        },
    }
    assert await _accounts(db, caller.tenant_id) == []


@pytest.mark.parametrize("provider", ["pop3", "imap"])
async def test_verify_names_the_server_that_refused_the_login(
    client: Any,
    db: Any,
    settings: Any,
    dovecot: Dovecot,
    mailbox_user: str,
    smtp_port: int,
    provider: str,
) -> None:
    caller = await make_caller(db)
    await make_synced_account(db, settings, caller)  # 127.0.0.1: details are shown
    role = provider.upper()
    bad_inbound = _body(provider, dovecot, mailbox_user, smtp_port, password="wrong-one")
    bad_smtp = _body(provider, dovecot, mailbox_user, smtp_port)
    bad_smtp["smtp"]["password"] = "wrong-two"

    first = await client.post("/v1/accounts/verify", json=bad_inbound, headers=caller.headers)
    second = await client.post("/v1/accounts/verify", json=bad_smtp, headers=caller.headers)

    assert first.status_code == 200 and second.status_code == 200
    assert first.json() == {
        "ok": False,
        "checks": {
            provider: {
                "ok": False,
                "message": f"The {role} server refused the login: wrong username or password.",
            },
            "smtp": {"ok": True, "message": "Logged in to the SMTP server."},
        },
    }
    assert second.json()["ok"] is False
    assert second.json()["checks"][provider]["ok"] is True
    assert second.json()["checks"]["smtp"] == {
        "ok": False,
        "message": "The SMTP server refused the login: wrong username or password.",
    }
    for r in (first, second):
        _quiet(r.text)
        assert "wrong-one" not in r.text and "wrong-two" not in r.text


async def test_verify_says_connection_refused_for_a_closed_port(
    client: Any, db: Any, settings: Any, dovecot: Dovecot, mailbox_user: str
) -> None:
    caller = await make_caller(db)
    await make_synced_account(db, settings, caller)  # 127.0.0.1: details are shown
    closed_pop3, closed_smtp = free_port(), free_port()
    body = _body("pop3", dovecot, mailbox_user, closed_smtp, port=closed_pop3)

    r = await client.post("/v1/accounts/verify", json=body, headers=caller.headers)

    assert r.status_code == 200, r.text
    assert r.json() == {
        "ok": False,
        "checks": {
            "pop3": {
                "ok": False,
                "message": "Could not connect to the POP3 server: connection refused.",
            },
            "smtp": {
                "ok": False,
                "message": "Could not connect to the SMTP server: connection refused.",
            },
        },
    }
    assert str(closed_pop3) not in r.text and str(closed_smtp) not in r.text


async def test_verify_never_quotes_a_hostile_pop3_server(
    client: Any, db: Any, settings: Any, banner_server: Any, dovecot: Dovecot, smtp_port: int
) -> None:
    caller = await make_caller(db)
    await make_synced_account(db, settings, caller)  # 127.0.0.1: details are shown
    banner = BANNER.encode()
    scripts = [
        # greeting, replies, what the tenant reads
        (
            b"+OK " + banner + b"\r\n",
            [b"-ERR " + banner + b"\r\n"] * 4,
            "The POP3 server refused the login: wrong username or password.",
        ),
        (b"-ERR " + banner + b" go away\r\n", [], "The POP3 server refused the connection."),
        (
            b"* OK " + banner + b" IMAP4rev1\r\n",
            [],
            "The POP3 server did not greet as a POP3 server.",
        ),
        (
            b"+OK hi\r\n",
            [b"+OK\r\nSTLS\r\n.\r\n", b"-ERR [SYS/TEMP] " + banner + b"\r\n"],
            "The POP3 server cannot answer STLS now [SYS/TEMP].",
        ),
        (
            b"+OK " + banner * 1000 + b"\r\n",
            [],
            "The POP3 server sent an over-long line during CONNECT.",
        ),
        (
            b"+OK <1.2@x>\r\n",
            [b"+OK\r\n.\r\n", b"+OK " + banner + b"\r\n", b"-ERR\r\n", b"-ERR " + banner + b"\r\n"],
            "The POP3 server does not support UIDL; postroom needs it to tell messages apart "
            "between syncs.",
        ),
    ]
    for greeting, replies, expected in scripts:
        peer = banner_server(greeting, replies)
        body = _body("pop3", dovecot, "ana@example.com", smtp_port, port=peer.port)
        if b"STLS" in b"".join(replies):
            body["pop3"]["security"] = "starttls"

        r = await client.post("/v1/accounts/verify", json=body, headers=caller.headers)

        assert r.status_code == 200, r.text
        check = r.json()["checks"]["pop3"]
        assert check == {"ok": False, "message": expected}
        assert_no_peer_words(check["message"], peer.port)
        assert BANNER not in r.text


async def test_verify_gives_up_on_a_silent_server_within_its_timeout(
    client: Any, db: Any, settings: Any, dovecot: Dovecot, smtp_port: int
) -> None:
    from services.accounts.verify import VERIFY_TIMEOUT_S

    caller = await make_caller(db)
    await make_synced_account(db, settings, caller)  # 127.0.0.1: details are shown
    # Listening, never accepting: the kernel completes the handshake and nothing is said.
    silent = socket.create_server(("127.0.0.1", 0))
    try:
        port = silent.getsockname()[1]
        body = _body("pop3", dovecot, "ana@example.com", smtp_port, port=port)
        start = time.monotonic()
        r = await client.post("/v1/accounts/verify", json=body, headers=caller.headers)
        took = time.monotonic() - start
    finally:
        silent.close()

    assert r.status_code == 200, r.text
    assert r.json()["checks"]["pop3"] == {
        "ok": False,
        "message": f"The POP3 server did not answer within {VERIFY_TIMEOUT_S:g}s.",
    }
    assert r.json()["checks"]["smtp"]["ok"] is True
    assert VERIFY_TIMEOUT_S <= took < VERIFY_TIMEOUT_S + 3


async def test_create_with_verify_refuses_to_save_an_account_that_cannot_log_in(
    client: Any, db: Any, settings: Any, dovecot: Dovecot, mailbox_user: str, smtp_port: int
) -> None:
    caller = await make_caller(db)
    synced = await make_synced_account(db, settings, caller)  # 127.0.0.1: details shown
    bad = _body("pop3", dovecot, mailbox_user, smtp_port, password="wrong-one")

    r = await client.post("/v1/accounts?verify=true", json=bad, headers=caller.headers)

    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "account_verification_failed"
    assert error["message"] == (
        "The account was not saved: The POP3 server refused the login: wrong username or password."
    )
    assert error["details"] == [
        {
            "server": "pop3",
            "ok": False,
            "message": "The POP3 server refused the login: wrong username or password.",
        },
        {"server": "smtp", "ok": True, "message": "Logged in to the SMTP server."},
    ]
    _quiet(r.text)
    assert [a.id for a in await _accounts(db, caller.tenant_id)] == [synced]

    good = await client.post(
        "/v1/accounts?verify=true",
        json=_body("pop3", dovecot, mailbox_user, smtp_port),
        headers=caller.headers,
    )
    assert good.status_code == 201, good.text
    saved = [a.provider for a in await _accounts(db, caller.tenant_id) if a.id != synced]
    assert saved == ["pop3"]


async def test_verify_applies_the_destination_rule_before_connecting(
    strict_client: Any, db: Any, banner_server: Any, dovecot: Dovecot, smtp_port: int
) -> None:
    caller = await make_caller(db)
    peer = banner_server(b"+OK " + BANNER.encode() + b"\r\n")
    body = _body("pop3", dovecot, "ana@example.com", smtp_port, port=peer.port)

    for path in ("/v1/accounts/verify", "/v1/accounts?verify=true"):
        r = await strict_client.post(path, json=body, headers=caller.headers)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "mail_host_not_allowed"
        assert "POP3 host is not allowed" in r.json()["error"]["message"]
    assert peer.connections == 0
    assert await _accounts(db, caller.tenant_id) == []


async def test_verify_of_a_nylas_account_checks_the_grant(
    client: Any, db: Any, fake_nylas: Any
) -> None:
    caller = await make_caller(db)
    fake_nylas.put_grant("grant-ok", "n@example.com")
    body = {"provider": "nylas", "email": "n@example.com", "nylas": {"grant_id": "grant-ok"}}

    ok = await client.post("/v1/accounts/verify", json=body, headers=caller.headers)
    body["nylas"]["grant_id"] = "grant-missing"
    missing = await client.post("/v1/accounts/verify", json=body, headers=caller.headers)
    refused = await client.post("/v1/accounts?verify=true", json=body, headers=caller.headers)

    assert ok.json() == {
        "ok": True,
        "checks": {
            "nylas": {"ok": True, "message": "The Nylas grant exists and belongs to this address."}
        },
    }
    assert missing.json() == {
        "ok": False,
        "checks": {"nylas": {"ok": False, "message": "No such Nylas grant."}},
    }
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "account_verification_failed"
