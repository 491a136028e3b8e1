"""What a failed task shows people, and the tenant guard on every event-backed task."""

from __future__ import annotations

import uuid

import pytest

from database.models import Event
from services.errors import PermissionDenied, ProviderTemporaryError
from services.events.dead_letters import scrub, shown_message
from services.nylas.notifications import message_values
from worker.execution import check_tenant


def test_only_our_own_exception_messages_are_shown() -> None:
    leaky = UnicodeEncodeError("ascii", "pä$$word", 1, 2, "ordinal not in range(128)")
    assert shown_message(leaky) == "UnicodeEncodeError"
    assert "ä" not in shown_message(leaky)
    assert shown_message(ConnectionRefusedError("dsn postgres://u:pw@h/db")) == (
        "ConnectionRefusedError"
    )
    assert shown_message(ProviderTemporaryError("Nylas answered 503 (api_error).")) == (
        "Nylas answered 503 (api_error)."
    )


def test_scrub_masks_every_secret_looking_key_at_any_depth() -> None:
    args = {
        "imap": {"passwd": "a", "password": "b", "host": "h"},
        "apiKey": "c",
        "api-key": "d",
        "items": [{"token": "e"}],
        "account_id": "x",
    }
    out = scrub(args)
    assert out["imap"] == {"passwd": "***", "password": "***", "host": "h"}
    assert out["apiKey"] == "***" and out["api-key"] == "***"
    assert out["items"] == [{"token": "***"}]
    assert out["account_id"] == "x"


def test_a_task_naming_another_tenant_than_its_event_is_refused() -> None:
    tenant = uuid.uuid4()
    event = Event(source="api", type="job", task_name="postroom.mail.delete", tenant_id=tenant)
    check_tenant(event, {"tenant_id": str(tenant)})
    check_tenant(event, {})
    with pytest.raises(PermissionDenied):
        check_tenant(event, {"tenant_id": str(uuid.uuid4())})


def test_nylas_names_that_are_not_strings_are_dropped() -> None:
    account = type("A", (), {"tenant_id": uuid.uuid4(), "id": uuid.uuid4()})()
    values = message_values(
        {
            "id": "m",
            "from": [{"email": "a@example.org", "name": 5}],
            "to": [{"email": "b@example.com", "name": ["x"]}],
        },
        account=account,
        version=None,  # type: ignore[arg-type]
    )
    assert values["from_name"] is None
    assert values["to_addrs"] == [{"name": None, "email": "b@example.com"}]
