"""Signature, envelope and compression rules of NYLAS.md sections 2-3."""

from __future__ import annotations

import gzip

import pytest

from services.errors import BadRequest, InvalidSignature, PayloadTooLarge
from services.events.webhooks import (
    base_type,
    decompress,
    parse_notification,
    sign,
    type_suffixes,
    verify_signature,
)


def test_signature_is_lowercase_hex_hmac_sha256_of_the_exact_bytes() -> None:
    # Known vector: HMAC-SHA256(key="secret", msg="body")
    assert (
        sign("secret", b"body")
        == "dc46983557fea127b43af721467eb9b3fde2338fe3e14f51952aa8478c13d355"
    )
    verify_signature("secret", b"body", sign("secret", b"body"))


@pytest.mark.parametrize("sig", [None, "", sign("other", b"body"), sign("secret", b"body ")])
def test_wrong_signatures_are_refused(sig) -> None:
    with pytest.raises(InvalidSignature):
        verify_signature("secret", b"body", sig)


def test_non_ascii_signature_is_refused_not_crashing() -> None:
    with pytest.raises(InvalidSignature):
        verify_signature("secret", b"body", "é" * 64)


@pytest.mark.parametrize(
    ("type_", "base", "suffixes"),
    [
        ("message.created", "message.created", set()),
        ("message.created.truncated", "message.created", {"truncated"}),
        (
            "message.updated.cleaned.transformed.truncated",
            "message.updated",
            {"cleaned", "transformed", "truncated"},
        ),
        ("message.created.metadata", "message.created", {"metadata"}),
        ("grant.expired", "grant.expired", set()),
    ],
)
def test_type_suffixes_are_stripped(type_, base, suffixes) -> None:
    assert base_type(type_) == base
    assert type_suffixes(type_) == suffixes


def test_gzip_roundtrip_and_limits() -> None:
    raw = b'{"id": "1", "type": "message.created"}'
    assert decompress(gzip.compress(raw), "gzip", limit=1000) == raw
    assert decompress(raw, None, limit=10) == raw
    with pytest.raises(PayloadTooLarge):
        decompress(gzip.compress(b"x" * 5000), "gzip", limit=1000)
    with pytest.raises(BadRequest):
        decompress(b"nope", "gzip", limit=1000)
    with pytest.raises(BadRequest):
        decompress(raw, "br", limit=1000)


def test_envelope_needs_string_id_and_type() -> None:
    n = parse_notification(b'{"id": "abc", "type": "message.created.truncated", "data": {}}')
    assert (n.id, n.base_type) == ("abc", "message.created")
    for bad in (b"[]", b"{}", b'{"id": "x"}', b'{"type": "t"}', b'{"id": 1, "type": "t"}'):
        with pytest.raises(BadRequest):
            parse_notification(bad)
