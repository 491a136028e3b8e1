"""A POP3 account as a client uses it: created through the API, synced and deleted by the real
Celery worker, the maildrop read back from Dovecot's POP3 server."""

from __future__ import annotations

from typing import Any

from services.pop3.client import Pop3Client, Pop3Config
from tests.api.keys import make_caller
from tests.helpers import wait_for
from tests.imap_fixtures import PASSWORD, Dovecot


async def _uidls(dovecot: Dovecot, user: str) -> list[str]:
    async with Pop3Client(Pop3Config.from_credentials(dovecot.pop3_credentials(user))) as c:
        return [uidl for _, uidl in await c.uidl()]


async def _run(client: Any, caller: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = await client.post(path, json=body, headers=caller.headers)
    assert r.status_code == 202, r.text
    task_id = r.json()["task_id"]

    async def finished() -> dict[str, Any] | None:
        t = (await client.get(f"/v1/tasks/{task_id}", headers=caller.headers)).json()
        return t if t["state"] in ("SUCCESS", "FAILURE") else None

    task = await wait_for(finished, timeout=60, message=f"the task of {path}")
    assert task["state"] == "SUCCESS", task
    return task["result"]  # type: ignore[no-any-return]


async def _listed(client: Any, caller: Any, account_id: str) -> list[dict[str, Any]]:
    r = await client.get(
        "/v1/messages", params={"account_id": account_id, "limit": 200}, headers=caller.headers
    )
    assert r.status_code == 200, r.text
    return r.json()["data"]  # type: ignore[no-any-return]


async def test_pop3_account_syncs_and_deletes_through_the_api_and_the_worker(
    client: Any, db: Any, worker: Any, dovecot: Dovecot, mailbox_user: str
) -> None:
    from scripts.corpus import messages, raw_message

    for path in list(messages("easy-ham-1"))[:10]:
        dovecot.deliver(mailbox_user, raw_message(path))
    caller = await make_caller(db)
    server = {
        "host": "127.0.0.1",
        "port": dovecot.pop3_port,
        "security": "none",
        "username": mailbox_user,
        "password": PASSWORD,
    }
    body = {
        "provider": "pop3",
        "email": mailbox_user,
        "pop3": server,
        "smtp": {"host": "127.0.0.1", "port": 2525, "security": "none"},
    }
    created = await client.post("/v1/accounts", json=body, headers=caller.headers)
    assert created.status_code == 201, created.text
    account_id = created.json()["id"]

    result = await _run(client, caller, f"/v1/accounts/{account_id}/sync", {})
    again = await _run(client, caller, f"/v1/accounts/{account_id}/sync", {})

    assert result == {"status": "success", "folders": 1, "new": 10, "updated": 0, "deleted": 0}
    assert again == {"status": "success", "folders": 1, "new": 0, "updated": 0, "deleted": 0}
    listed = await _listed(client, caller, account_id)
    assert len(listed) == 10 and {m["folder"] for m in listed} == {"INBOX"}
    folders = await client.get(f"/v1/accounts/{account_id}/folders", headers=caller.headers)
    assert [(f["name"], f["role"], f["message_count"]) for f in folders.json()["data"]] == [
        ("INBOX", "inbox", 10)
    ]
    on_server = await _uidls(dovecot, mailbox_user)
    assert sorted(on_server) == sorted(m["provider_id"] for m in listed)

    hard, soft = listed[0], listed[1]
    deleted = await _run(
        client, caller, "/v1/messages/delete", {"message_ids": [hard["id"]], "permanent": True}
    )
    hidden = await _run(
        client, caller, "/v1/messages/delete", {"message_ids": [soft["id"]], "permanent": False}
    )

    assert deleted == {"status": "success", "deleted_count": 1}
    assert hidden == {"status": "success", "deleted_count": 1}
    left = await _uidls(dovecot, mailbox_user)
    assert hard["provider_id"] not in left and soft["provider_id"] in left and len(left) == 9
    remaining = {m["id"] for m in await _listed(client, caller, account_id)}
    assert hard["id"] not in remaining and soft["id"] not in remaining and len(remaining) == 8
    # Neither comes back on the next sync.
    after = await _run(client, caller, f"/v1/accounts/{account_id}/sync", {})
    assert after == {"status": "success", "folders": 1, "new": 0, "updated": 0, "deleted": 0}
    assert len(await _listed(client, caller, account_id)) == 8
