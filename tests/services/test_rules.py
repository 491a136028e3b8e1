"""Rules: validation, matching, and idempotent moves/labels through the (fake) Nylas API."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from database.models import Folder, Message, Rule
from services.classify import rules
from services.errors import ValidationFailed
from services.nylas.gateway import NylasGateway
from tests.factories import create_nylas_account
from tests.fakes.nylas_server import make_message
from tests.helpers import NYLAS_API_KEY


def test_validate_refuses_rules_that_cannot_match_or_act() -> None:
    rules.validate({"is_spam": True}, {"type": "move", "folder_role": "junk"})
    for condition, action in [
        ({}, {"type": "label", "label": "x"}),
        ({"subject": "x"}, {"type": "label", "label": "x"}),
        ({"category": "nonsense"}, {"type": "label", "label": "x"}),
        ({"is_spam": "yes"}, {"type": "label", "label": "x"}),
        ({"is_spam": True}, {"type": "move"}),
        ({"is_spam": True}, {"type": "delete"}),
    ]:
        with pytest.raises(ValidationFailed):
            rules.validate(condition, action)


def test_conditions_match_spam_category_and_sender_domain() -> None:
    msg = Message(is_spam=False, category="promotions", from_email="deals@mail.shop.example")
    assert rules.matches({"category": "promotions"}, msg)
    assert rules.matches({"from_domain": "shop.example"}, msg)
    assert rules.matches({"from_domain": "mail.shop.example", "is_spam": False}, msg)
    assert not rules.matches({"from_domain": "op.example"}, msg)
    assert not rules.matches({"is_spam": True}, msg)
    assert not rules.matches({"category": "promotions", "is_spam": True}, msg)


async def _setup(db: Any, fake_nylas: Any, **fields: Any) -> tuple[Any, Message, dict[str, Any]]:
    account = await create_nylas_account(db)
    nylas_msg = make_message(account.grant_id, f"m-{uuid.uuid4().hex[:6]}")
    fake_nylas.put_message(account.grant_id, nylas_msg)
    async with db.transaction() as s:
        inbox = Folder(
            tenant_id=account.tenant_id,
            account_id=account.id,
            name="INBOX",
            provider_id="INBOX",
            role="inbox",
        )
        s.add(inbox)
        s.add(
            Folder(
                tenant_id=account.tenant_id,
                account_id=account.id,
                name="Junk",
                provider_id="JUNK",
                role="junk",
            )
        )
        s.add(
            Folder(
                tenant_id=account.tenant_id,
                account_id=account.id,
                name="Shopping",
                provider_id="SHOP",
            )
        )
        await s.flush()
        msg = Message(
            tenant_id=account.tenant_id,
            account_id=account.id,
            folder_id=inbox.id,
            provider_id=nylas_msg["id"],
            sort_at=datetime.now(UTC),
            **fields,
        )
        s.add(msg)
    return account, msg, nylas_msg


def gateway(fake_nylas: Any) -> NylasGateway:
    return NylasGateway(api_key=NYLAS_API_KEY, api_uri=fake_nylas.url, timeout=5)


async def test_spam_is_moved_to_junk_once_however_often_rules_run(
    db: Any, settings: Any, fake_nylas: Any
) -> None:
    account, msg, nylas_msg = await _setup(db, fake_nylas, is_spam=True, category="primary")
    async with db.transaction() as s:
        s.add(
            Rule(
                tenant_id=account.tenant_id,
                account_id=account.id,
                name="junk",
                condition={"is_spam": True},
                action={"type": "move", "folder_role": "junk"},
            )
        )
    for expected in (["move:Junk"], []):
        result = await rules.apply_rules(
            db,
            settings=settings,
            nylas=gateway(fake_nylas),
            tenant_id=account.tenant_id,
            message_id=msg.id,
        )
        assert result["applied"] == expected
    path = f"/v3/grants/{account.grant_id}/messages/{nylas_msg['id']}"
    assert [r.body for r in fake_nylas.requests_to(path) if r.method == "PUT"] == [
        {"folders": ["JUNK"]}
    ]
    assert fake_nylas.state.messages[account.grant_id][nylas_msg["id"]]["folders"] == ["JUNK"]


async def test_category_label_and_sender_folder_rules(
    db: Any, settings: Any, fake_nylas: Any
) -> None:
    account, msg, _ = await _setup(
        db, fake_nylas, is_spam=False, category="promotions", from_email="deals@shop.example"
    )
    async with db.transaction() as s:
        s.add(
            Rule(
                tenant_id=account.tenant_id,
                account_id=account.id,
                name="promo label",
                condition={"category": "promotions"},
                action={"type": "label", "label": "promos"},
                position=0,
            )
        )
        s.add(
            Rule(
                tenant_id=account.tenant_id,
                account_id=account.id,
                name="shop folder",
                condition={"from_domain": "shop.example"},
                action={"type": "move", "folder": "Shopping"},
                position=1,
            )
        )
        s.add(
            Rule(
                tenant_id=account.tenant_id,
                account_id=account.id,
                name="spam only",
                condition={"is_spam": True},
                action={"type": "move", "folder_role": "junk"},
            )
        )
    result = await rules.apply_rules(
        db,
        settings=settings,
        nylas=gateway(fake_nylas),
        tenant_id=account.tenant_id,
        message_id=msg.id,
    )
    assert result["applied"] == ["label:promos", "move:Shopping"]
    async with db.transaction() as s:
        stored = await s.get(Message, msg.id)
        shop = await s.get(Folder, stored.folder_id) if stored else None
    assert stored is not None and stored.labels == ["promos"]
    assert shop is not None and shop.name == "Shopping"


async def test_rules_of_another_tenant_cannot_touch_the_message(
    db: Any, settings: Any, fake_nylas: Any
) -> None:
    _, msg, _ = await _setup(db, fake_nylas, is_spam=True)
    stranger = await create_nylas_account(db)
    with pytest.raises(Exception) as err:
        await rules.apply_rules(
            db,
            settings=settings,
            nylas=gateway(fake_nylas),
            tenant_id=stranger.tenant_id,
            message_id=msg.id,
        )
    assert type(err.value).__name__ == "PermissionDenied"
