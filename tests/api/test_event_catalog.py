"""The OpenAPI document's `webhooks` section lists every outbound event type with its body and
an example, and what postroom really sends matches what it documents."""

from __future__ import annotations

from api.event_catalog import envelope_models
from services.tenant_events.emit import TenantEventType, emit_messages
from tests.api.keys import make_account, make_caller, make_folder, make_message


async def test_every_event_type_is_in_the_webhooks_section_with_an_example(client) -> None:
    doc = (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    assert set(doc["webhooks"]) == {t.value for t in TenantEventType}
    models = envelope_models()
    for kind, item in doc["webhooks"].items():
        content = item["post"]["requestBody"]["content"]["application/json"]
        [example] = content["examples"].values()
        assert example["value"]["type"] == kind
        models[kind].model_validate(example["value"])  # the example fits its own schema
        headers = {p["name"] for p in item["post"]["parameters"] if p["in"] == "header"}
        assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}


async def test_a_real_message_event_fits_its_documented_schema(client, db) -> None:
    caller = await make_caller(db)
    account_id = await make_account(db, caller)
    folder_id = await make_folder(db, caller, account_id, "INBOX", "inbox")
    mid = await make_message(db, caller, account_id, folder_id=folder_id, is_spam=False)
    async with db.transaction() as s:
        for kind in (TenantEventType.message_created, TenantEventType.message_classified):
            await emit_messages(s, tenant_id=caller.tenant_id, type=kind, message_ids=[mid])
    feed = (await client.get("/v1/feed", headers=caller.headers)).json()["data"]
    models = envelope_models()
    for event in feed:
        models[event["type"]].model_validate(event)
