"""Quotas (issue 20 item 4), as a tenant filling the database or a shared worker would try it:
rules that carry megabytes, rules and templates without end, drafts and uploads without end,
and the rules a worker reads for every new message."""

from __future__ import annotations

import base64
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from database.models import Message, Rule, Template
from services.classify import rules
from tests.api.keys import Caller, make_account, make_caller
from tests.peers import RedisServer

LABEL = {"type": "label", "label": "seen"}


async def _add_rules(db: Any, caller: Caller, account: uuid.UUID, n: int, **fields: Any) -> None:
    async with db.transaction() as s:
        for i in range(n):
            values = {
                "name": f"r{i}",
                "condition": {"is_spam": False},
                "action": LABEL,
                "position": i,
                **fields,
            }
            s.add(Rule(tenant_id=caller.tenant_id, account_id=account, **values))


@pytest.mark.parametrize(
    "action",
    [
        {"type": "label", "label": "x", "payload": "A" * 1_000_000},
        {"type": "label", "label": "L" * 1_000_000},
        {"type": "move", "folder": "F" * 1_000_000},
        {"type": "move", "folder_role": "junk", "folder_x": ["A" * 1000] * 1000},
        {"type": "label", "label": "x\r\nInjected: 1"},
    ],
    ids=["extra-key", "huge-label", "huge-folder", "nested-junk", "control-chars"],
)
async def test_a_rule_holds_only_its_bounded_fields(
    client: httpx.AsyncClient, db: Any, action: dict[str, Any]
) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    r = await client.post(
        f"/v1/accounts/{account}/rules",
        headers=caller.headers,
        json={"name": "hoard", "condition": {"is_spam": False}, "action": action},
    )
    assert r.status_code == 422, r.text[:200]
    assert r.json()["error"]["code"] == "validation_error"
    long_domain = {"from_domain": "a" * 100_000 + ".example"}
    r = await client.post(
        f"/v1/accounts/{account}/rules",
        headers=caller.headers,
        json={"name": "hoard", "condition": long_domain, "action": LABEL},
    )
    assert r.status_code == 422


async def test_an_account_holds_at_most_200_rules(client: httpx.AsyncClient, db: Any) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    await _add_rules(db, caller, account, 200)
    body = {"name": "one more", "condition": {"is_spam": True}, "action": LABEL}
    r = await client.post(f"/v1/accounts/{account}/rules", headers=caller.headers, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "rule_limit_reached"
    # Another account of the same tenant has its own 200.
    other = await make_account(db, caller, email="other@example.com")
    r = await client.post(f"/v1/accounts/{other}/rules", headers=caller.headers, json=body)
    assert r.status_code == 201, r.text


async def test_rules_are_listed_a_page_at_a_time_in_order(
    client: httpx.AsyncClient, db: Any
) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    await _add_rules(db, caller, account, 7)
    seen, cursor = [], None
    for _ in range(5):
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        r = await client.get(f"/v1/accounts/{account}/rules", headers=caller.headers, params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["data"]) <= 3
        seen += [rule["name"] for rule in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"r{i}" for i in range(7)]
    other = await make_account(db, caller, email="x@example.com")
    stolen = await client.get(
        f"/v1/accounts/{other}/rules", headers=caller.headers, params={"cursor": "x.1.y"}
    )
    assert stolen.status_code == 400


async def test_a_tenant_holds_at_most_500_templates(client: httpx.AsyncClient, db: Any) -> None:
    caller = await make_caller(db)
    async with db.transaction() as s:
        for i in range(500):
            s.add(Template(tenant_id=caller.tenant_id, name=f"t{i}", subject="s", text="t"))
    body = {"subject": "Hi", "text": "Hello"}
    r = await client.put("/v1/templates/one-more", headers=caller.headers, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "template_limit_reached"
    # Replacing one of the 500 is not a new one.
    r = await client.put("/v1/templates/t7", headers=caller.headers, json=body)
    assert r.status_code == 200, r.text


@pytest.fixture
async def quota_client(settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An API with a 200 KB storage quota, publishing to a Redis no worker reads."""
    from api.app import create_app

    redis = RedisServer().start()
    update = {"redis_url": redis.url, "tenant_storage_bytes": 200_000}
    application = create_app(settings.model_copy(update=update))
    try:
        async with application.router.lifespan_context(application):
            transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://postroom.test") as c:
                yield c
    finally:
        redis.stop()


async def test_drafts_scheduled_sends_and_uploads_share_a_byte_quota(
    quota_client: httpx.AsyncClient, db: Any
) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)

    def send(**extra: Any) -> dict[str, Any]:
        return {"account_id": str(account), "to": [{"email": "x@example.org"}], **extra}

    url, headers = "/v1/messages/send", caller.headers
    r = await quota_client.post(url, headers=headers, json=send(text="a" * 90_000))
    assert r.status_code == 202, r.text
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    upload = {
        "filename": "big.bin",
        "content_type": "application/octet-stream",
        "content_base64": base64.b64encode(b"\0" * 90_000).decode(),
    }
    r = await quota_client.post(
        url, headers=headers, json=send(text="scheduled", send_at=later, attachments=[upload])
    )
    assert r.status_code == 202, r.text
    # 180 KB held: another 30 KB of upload passes the 200 KB quota.
    upload["content_base64"] = base64.b64encode(b"\0" * 30_000).decode()
    r = await quota_client.post(url, headers=headers, json=send(attachments=[upload]))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "storage_quota_exceeded"
    r = await quota_client.post(url, headers=headers, json=send(html="<p>" + "b" * 30_000))
    assert r.status_code == 422
    # A small one still fits, and another tenant has its own quota.
    assert (await quota_client.post(url, headers=headers, json=send(text="hi"))).status_code == 202
    other = await make_caller(db)
    mine = await make_account(db, other)
    body = {"account_id": str(mine), "to": [{"email": "x@example.org"}], "text": "c" * 90_000}
    assert (await quota_client.post(url, headers=other.headers, json=body)).status_code == 202


async def test_a_worker_never_loads_oversized_rules_for_a_message(db: Any) -> None:
    """Rules stored before the bounds (written here straight into the table, as they were
    accepted then) are skipped by the query: 4 rules of 2 MB cost the worker nothing."""
    caller = await make_caller(db)
    account = await make_account(db, caller)
    junk = {"type": "label", "label": "hoard", "payload": "A" * 2_000_000}
    await _add_rules(db, caller, account, 4, action=junk)
    await _add_rules(db, caller, account, 1, name="small", position=9)
    async with db.transaction() as s:
        message = Message(
            tenant_id=caller.tenant_id,
            account_id=account,
            provider_id=f"p-{uuid.uuid4().hex}",
            is_spam=False,
            sort_at=datetime.now(UTC),
        )
        s.add(message)
    tracemalloc.start()
    try:
        result = await rules.apply_rules(
            db, settings=None, nylas=None, tenant_id=caller.tenant_id, message_id=message.id
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result["applied"] == ["label:seen"]
    assert peak < 1_000_000, f"applying rules to one message allocated {peak} bytes"
