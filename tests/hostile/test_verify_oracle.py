"""Account verification is not an oracle (issue 20 item 5): a tenant using
POST /v1/accounts/verify to guess passwords or scan ports of hosts that are not its own gets a
small budget and one generic sentence; and no account may send without credentials to port 25
of a host the operator has not named as a relay."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from services.outbound.smtp import SmtpConfig, SmtpConnection
from tests.api.keys import make_caller, make_synced_account
from tests.banner_server import banner_server
from tests.imap_fixtures import PASSWORD, Dovecot
from tests.peers import free_port

banner_server = banner_server


def _pop3_body(host: str, port: int, smtp_port: int, password: str = PASSWORD) -> dict[str, Any]:
    server = {"host": host, "port": port, "security": "none"}
    return {
        "provider": "pop3",
        "email": "ana@example.com",
        "pop3": {**server, "username": "ana@example.com", "password": password},
        "smtp": {**server, "port": smtp_port, "username": "ana", "password": "x"},
    }


async def test_verify_is_budgeted_per_tenant_and_per_host(
    client: httpx.AsyncClient, db: Any, banner_server: Any
) -> None:
    caller, bystander = await make_caller(db), await make_caller(db)
    peer = banner_server(b"+OK hello\r\n", [b"-ERR no\r\n"] * 4)
    body = _pop3_body("127.0.0.1", peer.port, free_port())
    answers = [
        await client.post("/v1/accounts/verify", json=body, headers=caller.headers)
        for _ in range(8)
    ]
    statuses = [r.status_code for r in answers]
    assert statuses[:5] == [200] * 5, statuses
    assert 429 in statuses, f"40 guesses a second went unbudgeted: {statuses}"
    refused = answers[statuses.index(429)]
    assert refused.json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 60
    connections = peer.connections
    again = await client.post("/v1/accounts/verify", json=body, headers=caller.headers)
    assert again.status_code == 429
    assert peer.connections == connections, "a refused check still connected"
    # Spreading over hosts meets the tenant's own budget.
    for _ in range(12):
        other = _pop3_body("localhost", free_port(), free_port())
        last = await client.post("/v1/accounts/verify", json=other, headers=caller.headers)
        if last.status_code == 429:
            break
    assert last.status_code == 429
    assert "verification budget" in last.json()["error"]["message"]
    # Another tenant is not held back by it.
    r = await client.post("/v1/accounts/verify", json=body, headers=bystander.headers)
    assert r.status_code == 200


async def test_failures_on_unproved_hosts_all_read_the_same(
    client: httpx.AsyncClient, db: Any, settings: Any, dovecot: Dovecot, mailbox_user: str
) -> None:
    caller = await make_caller(db)
    closed = free_port()
    wrong_password = _pop3_body("127.0.0.1", dovecot.pop3_port, closed, password="guess-1")
    wrong_password["pop3"]["username"] = mailbox_user
    closed_port = _pop3_body("127.0.0.1", free_port(), closed)
    texts = []
    for body in (wrong_password, closed_port):
        r = await client.post("/v1/accounts/verify", json=body, headers=caller.headers)
        assert r.status_code == 200, r.text
        texts.append(r.json()["checks"])
    assert texts[0] == texts[1], "the answer tells a refused login from a closed port"
    assert texts[0]["pop3"]["ok"] is False
    for word in ("password", "refused", "connect", "timed", "TLS"):
        assert word not in texts[0]["pop3"]["message"]
    # Once an account of the tenant has synced from the host, its failures are explained.
    await make_synced_account(db, settings, caller, host="127.0.0.1")
    r = await client.post("/v1/accounts/verify", json=wrong_password, headers=caller.headers)
    assert "wrong username or password" in r.json()["checks"]["pop3"]["message"]


@pytest.fixture
async def relay_client(settings: Any) -> Any:
    from api.app import create_app

    async def make(allowed: str) -> tuple[Any, httpx.AsyncClient]:
        app = create_app(settings.model_copy(update={"allowed_relay_hosts": allowed}))
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        return app, httpx.AsyncClient(transport=transport, base_url="http://postroom.test")

    return make


@pytest.mark.parametrize("host", ["8.8.8.8", "mx.unresolvable.invalid"])
async def test_smtp_without_credentials_to_port_25_is_refused(
    client: httpx.AsyncClient, db: Any, relay_client: Any, host: str
) -> None:
    caller = await make_caller(db)
    imap = {"host": "127.0.0.1", "port": 993, "security": "tls", "username": "a", "password": "b"}

    def body(port: int, **smtp: Any) -> dict[str, Any]:
        relay = {"host": host, "port": port, "security": "none", **smtp}
        return {"provider": "imap", "email": "ana@example.com", "imap": imap, "smtp": relay}

    r = await client.post("/v1/accounts", json=body(25), headers=caller.headers)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "smtp_relay_not_allowed"
    r = await client.post("/v1/accounts/verify", json=body(25), headers=caller.headers)
    assert r.status_code == 422
    # With credentials, or on another port, it is the tenant's server and its business.
    authed = body(25, username="a", password="b")
    assert (
        await client.post("/v1/accounts", json=authed, headers=caller.headers)
    ).status_code == 201
    created = await client.post("/v1/accounts", json=body(587), headers=caller.headers)
    assert created.status_code == 201
    patch = {"smtp": body(25)["smtp"]}
    r = await client.patch(
        f"/v1/accounts/{created.json()['id']}", json=patch, headers=caller.headers
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "smtp_relay_not_allowed"
    # The operator may name relays.
    app, allowed = await relay_client(host)
    async with app.router.lifespan_context(app), allowed:
        r = await allowed.post("/v1/accounts", json=body(25), headers=caller.headers)
        assert r.status_code == 201, r.text


async def test_the_worker_refuses_an_unlisted_relay_before_connecting() -> None:
    from services.destination import RelayNotAllowed

    config = SmtpConfig(
        host="127.0.0.1",
        port=25,
        security="none",
        allowed_private_hosts="127.0.0.0/8",
        allowed_relay_hosts="",
    )
    with pytest.raises(RelayNotAllowed):
        async with SmtpConnection(config) as conn:
            await conn.connect()
