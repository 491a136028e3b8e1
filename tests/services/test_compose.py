"""The composed message, read back with the standard parser as a mail client would."""

from __future__ import annotations

from email import message_from_bytes, policy

import pytest

from services.errors import ValidationFailed
from services.outbound.compose import AttachmentFile, Person, ReplyTarget, compose, people, person


def _build(**overrides):
    args = dict(
        sender=Person("me@example.com", "Zoë Ünïcode"),
        to=people([{"email": "bob@example.org", "name": "Bøb, the Builder"}], "to"),
        cc=people(["carol@example.org"], "cc"),
        bcc=people(["secret@example.net"], "bcc"),
        subject="Grüße aus Köln - 日本語",
        body_text="Hallo Bob, schöne Grüße.",
        body_html="<p>Hallo <b>Bob</b>, schöne Grüße.</p>",
    )
    args.update(overrides)
    return compose(**args)


def _parse(data: bytes):
    return message_from_bytes(data, policy=policy.default)


def test_headers_are_encoded_and_decode_back() -> None:
    composed = _build()
    raw_head = composed.data.split(b"\r\n\r\n", 1)[0]
    assert raw_head.isascii(), "non-ASCII must be RFC 2047 encoded in headers"
    msg = _parse(composed.data)
    assert msg["Subject"] == "Grüße aus Köln - 日本語"
    assert msg["From"].addresses[0].display_name == "Zoë Ünïcode"
    assert msg["From"].addresses[0].addr_spec == "me@example.com"
    assert msg["To"].addresses[0].display_name == "Bøb, the Builder"
    assert msg["Cc"].addresses[0].addr_spec == "carol@example.org"
    assert msg["Message-ID"] == composed.message_id_header
    assert composed.message_id_header.endswith("@example.com>")
    assert msg["Date"].datetime is not None


def test_bcc_is_in_the_envelope_but_never_in_headers() -> None:
    composed = _build()
    assert composed.recipients == ["bob@example.org", "carol@example.org", "secret@example.net"]
    assert b"secret@example.net" not in composed.data
    assert _parse(composed.data)["Bcc"] is None


def test_text_and_html_are_multipart_alternative() -> None:
    msg = _parse(_build().data)
    assert msg.get_content_type() == "multipart/alternative"
    parts = [p.get_content_type() for p in msg.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    assert msg.get_body(("plain",)).get_content().strip() == "Hallo Bob, schöne Grüße."
    assert "<b>Bob</b>" in msg.get_body(("html",)).get_content()


def test_html_only_gets_a_text_alternative() -> None:
    msg = _parse(_build(body_text=None).data)
    assert msg.get_body(("plain",)).get_content().strip() == "Hallo Bob, schöne Grüße."


def test_attachments_round_trip() -> None:
    pdf = b"%PDF-1.4\x00\x01binary"
    msg = _parse(_build(attachments=[AttachmentFile("Bericht ü.pdf", "application/pdf", pdf)]).data)
    assert msg.get_content_type() == "multipart/mixed"
    atts = list(msg.iter_attachments())
    assert [a.get_filename() for a in atts] == ["Bericht ü.pdf"]
    assert atts[0].get_content_type() == "application/pdf"
    assert atts[0].get_content() == pdf


def test_reply_sets_in_reply_to_and_references() -> None:
    target = ReplyTarget("<parent@example.org>", ["<root@example.org>", "<mid@example.org>"])
    msg = _parse(_build(reply_to_message=target).data)
    assert msg["In-Reply-To"] == "<parent@example.org>"
    assert msg["References"].split() == [
        "<root@example.org>",
        "<mid@example.org>",
        "<parent@example.org>",
    ]


@pytest.mark.parametrize("subject", ["Hi\r\nBcc: victim@example.org", "Hi\nX-Evil: 1", "a\rb"])
def test_header_injection_in_subject_is_refused(subject: str) -> None:
    with pytest.raises(ValidationFailed):
        _build(subject=subject)


@pytest.mark.parametrize(
    "value",
    [
        {"email": "bob@example.org", "name": "Bob\r\nBcc: victim@example.org"},
        {"email": "bob@example.org\r\nBcc: victim@example.org"},
        "bob@example.org\nX: y",
        "not an address",
        "<bob@example.org>",
    ],
)
def test_injection_and_bad_addresses_are_refused(value) -> None:
    with pytest.raises(ValidationFailed):
        person(value)


def test_a_message_needs_a_recipient() -> None:
    with pytest.raises(ValidationFailed):
        _build(to=[], cc=[], bcc=[])


def test_given_message_id_is_kept() -> None:
    assert (
        _build(message_id_header="<fixed@example.com>").message_id_header == "<fixed@example.com>"
    )
