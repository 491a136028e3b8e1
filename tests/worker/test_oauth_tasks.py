"""OAuth2 accounts through the real API, Celery worker, Dovecot (oauth2 passdb) and the XOAUTH2
SMTP peer: the provider expires the token mid-test, its token endpoint goes down; syncs and
sends go on, and no token reaches the worker's log or a task message."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from database.engine import Database
from database.models import OAuthToken, TenantEvent
from services.oauth.grants import unseal
from tests.api.keys import make_caller
from tests.helpers import wait_for
from tests.oauth_fixtures import create_app, create_oauth_account, generic_app_body

RAW = (
    b"From: a@example.com\r\nTo: {to}\r\nSubject: hello {n}\r\n"
    b"Message-ID: <m{n}.{u}@example.com>\r\n\r\nbody {n}\r\n"
)


async def _job(client: Any, caller: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = await client.post(path, json=body, headers=caller.headers)
    assert r.status_code == 202, r.text
    task_id = r.json()["task_id"]

    async def finished() -> dict[str, Any] | None:
        t = (await client.get(f"/v1/tasks/{task_id}", headers=caller.headers)).json()
        return t if t["state"] in ("SUCCESS", "FAILURE") else None

    task = await wait_for(finished, timeout=90, message=f"the task of {path}")
    assert task["state"] == "SUCCESS", task
    return task["result"]  # type: ignore[no-any-return]


def _deliver(dovecot: Any, email: str, n: int) -> None:
    raw = RAW.decode().format(to=email, n=n, u=uuid.uuid4().hex).encode()
    dovecot.deliver(email, raw)


async def _secrets_of(db: Database, settings: Any, account_id: str) -> tuple[str, str]:
    async with db.transaction() as s:
        row = (
            await s.execute(
                sa.select(OAuthToken).where(OAuthToken.account_id == uuid.UUID(account_id))  # type: ignore[arg-type]
            )
        ).scalar_one()
    access, refresh = unseal(settings, row.ciphertext)
    return access or "", refresh


async def test_sync_and_send_go_on_when_the_provider_expires_the_token(
    client: Any,
    db: Database,
    settings: Any,
    worker: Any,
    fresh_oauth: Any,
    oauth_dovecot: Any,
    xoauth2_smtp: Any,
) -> None:
    server = fresh_oauth
    server.rotate = True  # Microsoft's way: every refresh spends the refresh token
    caller = await make_caller(db)
    app_id = await create_app(
        client, caller.headers, generic_app_body(server, oauth_dovecot, xoauth2_smtp)
    )
    account_id, email = await create_oauth_account(client, caller.headers, server, app_id)
    log_from = len(worker.log())
    for n in range(3):
        _deliver(oauth_dovecot, email, n)
    before = server.refreshes

    first = await _job(client, caller, f"/v1/accounts/{account_id}/sync", {})
    assert first["new"] == 3 and server.refreshes == before

    server.expire_all()  # every token issued so far is dead at the provider now
    sent = await _job(
        client,
        caller,
        "/v1/messages/send",
        {
            "account_id": account_id,
            "to": [{"email": "rcpt@example.net"}],
            "subject": "s1",
            "text": "t",
        },
    )
    assert sent["recipients_sent"] == 1
    assert server.refreshes == before + 1, "one refresh, then SMTP and the Sent copy use it"
    assert any(r.rcpt_tos == ["rcpt@example.net"] for r in xoauth2_smtp.received)

    _deliver(oauth_dovecot, email, 3)
    second = await _job(client, caller, f"/v1/accounts/{account_id}/sync", {})
    assert second["new"] >= 1 and server.refreshes == before + 1

    access, refresh = await _secrets_of(db, settings, account_id)
    assert server.active_refresh_tokens(email) == [refresh], "the rotated token was kept"
    log = worker.log()[log_from:]
    assert "oauth_token_refreshed" in log  # the log of this test's work is what is searched
    for secret in (access, refresh, *server.tokens, *server.grants):
        assert secret not in log


async def test_a_token_endpoint_that_is_down_delays_the_sync_and_costs_no_reauth(
    client: Any,
    db: Database,
    worker: Any,
    fresh_oauth: Any,
    oauth_dovecot: Any,
    xoauth2_smtp: Any,
) -> None:
    server = fresh_oauth
    caller = await make_caller(db)
    app_id = await create_app(
        client, caller.headers, generic_app_body(server, oauth_dovecot, xoauth2_smtp)
    )
    # Two minutes left: inside the refresh margin, so the sync must refresh first.
    account_id, email = await create_oauth_account(
        client, caller.headers, server, app_id, ttl_s=120
    )
    _deliver(oauth_dovecot, email, 0)
    server.down = True
    before = server.refreshes
    r = await client.post(f"/v1/accounts/{account_id}/sync", json={}, headers=caller.headers)
    task_id = r.json()["task_id"]

    async def retried() -> bool:
        return server.refreshes >= before + 2

    await wait_for(retried, timeout=60, message="the sync to retry the refresh")
    account = (await client.get(f"/v1/accounts/{account_id}", headers=caller.headers)).json()
    assert account["status"] == "active"
    server.down = False

    async def finished() -> dict[str, Any] | None:
        t = (await client.get(f"/v1/tasks/{task_id}", headers=caller.headers)).json()
        return t if t["state"] in ("SUCCESS", "FAILURE") else None

    task = await wait_for(finished, timeout=90, message="the sync after the endpoint is back")
    assert task["state"] == "SUCCESS", task
    assert task["result"]["new"] == 1
    async with db.transaction() as s:
        events = (
            (
                await s.execute(
                    sa.select(TenantEvent).where(TenantEvent.tenant_id == caller.tenant_id)
                )  # type: ignore[arg-type]
            )
            .scalars()
            .all()
        )
    # The sync tells what it stored; nothing says the grant failed.
    assert "account.auth_failed" not in [e.type for e in events]
    assert "message.created" in [e.type for e in events]
    account = (await client.get(f"/v1/accounts/{account_id}", headers=caller.headers)).json()
    assert account["status"] == "active"


async def test_two_worker_processes_needing_a_refresh_at_once_send_one(
    client: Any,
    db: Database,
    worker: Any,
    fresh_oauth: Any,
    oauth_dovecot: Any,
    xoauth2_smtp: Any,
) -> None:
    """Two syncs of one account run in two worker processes; the endpoint takes 2 s, so the
    second asks while the first holds the lease: it waits (its log says so) and uses the
    first one's token."""
    server = fresh_oauth
    caller = await make_caller(db)
    app_id = await create_app(
        client, caller.headers, generic_app_body(server, oauth_dovecot, xoauth2_smtp)
    )
    account_id, email = await create_oauth_account(
        client, caller.headers, server, app_id, ttl_s=120
    )
    _deliver(oauth_dovecot, email, 0)
    server.refresh_delay_s = 2.0
    log_from = len(worker.log())
    before = server.refreshes
    inbox = await _job_ids(client, caller, account_id, {"folder": "INBOX"})
    sent = await _job_ids(client, caller, account_id, {"folder": "Sent"})
    for task_id in (inbox, sent):
        await _finished(client, caller, task_id)
    assert server.refreshes == before + 1
    lines = worker.log()[log_from:].splitlines()
    waited = [line for line in lines if "oauth_refresh_waited" in line]
    assert waited and account_id in waited[0], [line for line in lines if "oauth" in line]


async def _job_ids(client: Any, caller: Any, account_id: str, body: dict[str, Any]) -> str:
    r = await client.post(f"/v1/accounts/{account_id}/sync", json=body, headers=caller.headers)
    assert r.status_code == 202, r.text
    return str(r.json()["task_id"])


async def _finished(client: Any, caller: Any, task_id: str) -> None:
    async def done() -> dict[str, Any] | None:
        t = (await client.get(f"/v1/tasks/{task_id}", headers=caller.headers)).json()
        return t if t["state"] in ("SUCCESS", "FAILURE") else None

    task = await wait_for(done, timeout=90, message="the sync")
    assert task["state"] == "SUCCESS", task


async def test_a_grant_revoked_at_the_provider_stops_the_sync_and_tells_the_tenant(
    client: Any,
    db: Database,
    worker: Any,
    fresh_oauth: Any,
    oauth_dovecot: Any,
    xoauth2_smtp: Any,
) -> None:
    """The user removes the app's access: Dovecot refuses the token, the refresh answers
    invalid_grant, and the account shows reauth_required with one account.auth_failed."""
    server = fresh_oauth
    caller = await make_caller(db)
    app_id = await create_app(
        client, caller.headers, generic_app_body(server, oauth_dovecot, xoauth2_smtp)
    )
    account_id, email = await create_oauth_account(client, caller.headers, server, app_id)
    server.revoke(email)
    r = await client.post(f"/v1/accounts/{account_id}/sync", json={}, headers=caller.headers)
    task_id = r.json()["task_id"]

    async def finished() -> dict[str, Any] | None:
        t = (await client.get(f"/v1/tasks/{task_id}", headers=caller.headers)).json()
        return t if t["state"] in ("SUCCESS", "FAILURE") else None

    task = await wait_for(finished, timeout=90, message="the sync of a revoked grant")
    assert task["state"] == "FAILURE"
    account = (await client.get(f"/v1/accounts/{account_id}", headers=caller.headers)).json()
    assert account["status"] == "reauth_required"
    async with db.transaction() as s:
        events = (
            (
                await s.execute(
                    sa.select(TenantEvent).where(TenantEvent.tenant_id == caller.tenant_id)
                )  # type: ignore[arg-type]
            )
            .scalars()
            .all()
        )
    failed = [e for e in events if e.type == "account.auth_failed"]
    assert len(failed) == 1 and failed[0].data["account"]["id"] == account_id
