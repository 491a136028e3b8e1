"""Message extras on the detail: reply_text (API.md "Additions", "Message extras")."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.keys import make_account, make_caller, make_message


async def test_detail_has_the_reply_without_its_quoted_history(
    client: httpx.AsyncClient, db: Any
) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    body = (
        "Yes, Thursday works.\n\n-- \nAna\n\n"
        "On Mon, Mar 4, 2024 at 10:12 AM Bo <bo@example.com> wrote:\n> Thursday?\n"
    )
    mid = await make_message(db, caller, account, text=body)
    plain = await make_message(db, caller, account, text=None, html=None)
    r = await client.get(f"/v1/messages/{mid}", headers=caller.headers)
    assert r.status_code == 200, r.text
    assert r.json()["reply_text"] == "Yes, Thursday works."
    assert r.json()["text"] == body
    r = await client.get(f"/v1/messages/{plain}", headers=caller.headers)
    assert r.json()["reply_text"] is None
    listed = await client.get("/v1/messages", headers=caller.headers)
    assert "reply_text" not in listed.json()["data"][0]
