"""Ids reach Nylas URL paths as exactly one segment: a grant id is a plain id or nothing is
sent, and a message id with "/" or "?" cannot address another object (the SDK encodes message
ids; the fake Nylas records the path it was asked for)."""

from __future__ import annotations

import pytest

from services.errors import ValidationFailed
from services.nylas.gateway import NylasGateway
from tests.helpers import NYLAS_API_KEY


def _gateway(fake_nylas) -> NylasGateway:
    return NylasGateway(api_key=NYLAS_API_KEY, api_uri=fake_nylas.url, timeout=5)


@pytest.mark.parametrize("grant_id", ["zz/../grant-victim", "a b", "g?x=1", "", "..", "g" * 201])
async def test_a_grant_id_that_is_not_plain_never_reaches_nylas(fake_nylas, grant_id) -> None:
    fake_nylas.put_grant("grant-victim", "victim@example.com")
    gateway = _gateway(fake_nylas)
    with pytest.raises(ValidationFailed):
        await gateway.find_grant(grant_id)
    with pytest.raises(ValidationFailed):
        await gateway.find_message(grant_id, "m1")
    with pytest.raises(ValidationFailed):
        await gateway.list_messages(grant_id, query={"limit": 1})
    assert fake_nylas.requests_to(r"/v3/grants") == []


async def test_a_message_id_is_one_encoded_segment(fake_nylas) -> None:
    fake_nylas.put_grant("grant-1", "a@example.com")
    gateway = _gateway(fake_nylas)
    for message_id in ("../../grant-victim", "m/../x", "m?limit=1"):
        with pytest.raises(Exception):  # noqa: B017 - the fake answers 404 for an unknown id
            await gateway.find_message("grant-1", message_id)
    paths = [r.path for r in fake_nylas.requests_to(r"/v3/grants")]
    assert paths == [
        "/v3/grants/grant-1/messages/..%2F..%2Fgrant-victim",
        "/v3/grants/grant-1/messages/m%2F..%2Fx",
        "/v3/grants/grant-1/messages/m%3Flimit%3D1",
    ]
    for dots in ("..", ".", ""):  # dot segments survive encoding: `messages/..` is the grant
        with pytest.raises(ValidationFailed):
            await gateway.find_message("grant-1", dots)
        with pytest.raises(ValidationFailed):
            await gateway.destroy_message("grant-1", dots)
    assert len(fake_nylas.requests_to(r"/v3/grants")) == 3
