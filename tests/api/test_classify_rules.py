"""POST /v1/messages/{id}/feedback and /v1/accounts/{id}/rules as a client sees them."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from tests.api.keys import make_account, make_caller, make_message
from tests.helpers import wait_for


async def test_feedback_answers_204_and_teaches_only_the_callers_tenant(
    client: Any, db: Any
) -> None:
    caller, other = await make_caller(db), await make_caller(db)
    account = await make_account(db, caller)
    message = await make_message(db, caller, account, subject="hi", text="grumbo plank offer")
    r = await client.post(
        f"/v1/messages/{message}/feedback", json={"label": "spam"}, headers=caller.headers
    )
    assert r.status_code == 204 and r.content == b""
    async with db.sessionmaker() as s:
        rows = (
            await s.execute(
                sa.text(
                    "SELECT f.tenant_id, f.label, m.changes FROM classifier_feedback f"
                    " JOIN tenant_spam_model m USING (tenant_id) WHERE f.message_id = :m"
                ),
                {"m": message},
            )
        ).all()
    assert [(row.tenant_id, row.label, row.changes) for row in rows] == [
        (caller.tenant_id, "spam", 1)
    ]
    # Another tenant's key sees no such message.
    r = await client.post(
        f"/v1/messages/{message}/feedback", json={"label": "ham"}, headers=other.headers
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = await client.post(
        f"/v1/messages/{message}/feedback", json={"label": "maybe"}, headers=caller.headers
    )
    assert r.status_code == 422


async def test_rules_crud_with_validation_and_tenant_isolation(client: Any, db: Any) -> None:
    caller, other = await make_caller(db), await make_caller(db)
    account = await make_account(db, caller)
    base = f"/v1/accounts/{account}/rules"
    rule = {
        "name": "spam to junk",
        "condition": {"is_spam": True},
        "action": {"type": "move", "folder_role": "junk"},
    }
    r = await client.post(base, json=rule, headers=caller.headers)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["condition"] == {"is_spam": True} and created["enabled"] is True

    bad = {**rule, "action": {"type": "explode"}}
    r = await client.post(base, json=bad, headers=caller.headers)
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"

    r = await client.patch(
        f"{base}/{created['id']}", json={"enabled": False}, headers=caller.headers
    )
    assert r.status_code == 200 and r.json()["enabled"] is False
    r = await client.get(base, headers=caller.headers)
    assert [x["id"] for x in r.json()["data"]] == [created["id"]]

    assert (await client.get(base, headers=other.headers)).status_code == 404
    r = await client.delete(f"{base}/{created['id']}", headers=other.headers)
    assert r.status_code == 404
    r = await client.delete(f"{base}/{created['id']}", headers=caller.headers)
    assert r.status_code == 204
    assert (await client.get(f"{base}/{created['id']}", headers=caller.headers)).status_code == 404


@pytest.mark.usefixtures("worker")
async def test_feedback_publishes_the_refit_after_it_commits_and_the_worker_fits(
    client: Any, db: Any
) -> None:
    """The label commits in the request; the refit runs as its own task on the worker."""
    caller = await make_caller(db)
    account = await make_account(db, caller)
    message = await make_message(db, caller, account, subject="hi", text="grumbo plank offer")
    r = await client.post(
        f"/v1/messages/{message}/feedback", json={"label": "spam"}, headers=caller.headers
    )
    assert r.status_code == 204

    async def fitted() -> Any:
        async with db.sessionmaker() as s:
            row = (
                await s.execute(
                    sa.text(
                        "SELECT changes, fitted_changes, n_spam, generation"
                        " FROM tenant_spam_model WHERE tenant_id = :t"
                    ),
                    {"t": caller.tenant_id},
                )
            ).one()
        return row if row.fitted_changes == 1 else None

    row = await wait_for(fitted, timeout=60, message="the tenant's model to be refitted")
    assert (row.changes, row.n_spam, row.generation) == (1, 1, 1)
