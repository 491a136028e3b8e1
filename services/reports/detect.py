"""The one entry point: is this stored message a delivery report, and what does it say?

Cheap for ordinary mail: `candidate` reads a few headers; only a message that passes it has
its parts opened or its text scanned (a cost bounded by the caps in fields.py and plain.py).
"""

from __future__ import annotations

import re
from email.message import Message
from typing import Any

from services.reports import autoreply, plain, standard
from services.reports.fields import address_in, addresses_in, message_id_in
from services.reports.model import Recipient, Report

_HEADER_NAME = re.compile(r"^[!-9;-~]{1,100}$")
_NEWLINES = re.compile(r"[\r\n]+")
_VERP_HEADERS = ("To", "Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To")


def candidate(
    msg: Message, *, from_email: str | None, from_name: str | None, subject: str | None
) -> bool:
    """A few header reads: whether the message can be a report at all."""
    if msg.get_content_type() == "multipart/report":
        return True
    if autoreply.is_auto_reply(msg, subject=subject):
        return True
    if msg.get("X-HmXmrOriginalRecipient"):
        return True
    return plain.maybe_bounce(from_email=from_email, from_name=from_name, subject=subject, msg=msg)


def _verp_addresses(msg: Message) -> list[str]:
    """Addresses the report was delivered to: a VERP return path shows up here."""
    found: list[str] = []
    for name in _VERP_HEADERS:
        for value in msg.get_all(name, [])[:5]:
            found += addresses_in(str(value)[:2000], 10)
    return list(dict.fromkeys(found))


def detect(
    msg: Message,
    *,
    from_email: str | None,
    from_name: str | None,
    subject: str | None,
    text: str | None,
) -> Report | None:
    """The report this message is, or None for ordinary mail."""
    if not candidate(msg, from_email=from_email, from_name=from_name, subject=subject):
        return None
    report = _read(msg, from_email=from_email, from_name=from_name, subject=subject, text=text)
    if report is None:
        return None
    report.verp = [a for a in _verp_addresses(msg) if "+" in a.partition("@")[0]]
    if report.original_message_id is None and report.kind != "auto_reply":
        # Some servers (Gmail, Exchange) answer in the thread of what bounced.
        report.original_message_id = message_id_in(msg.get("In-Reply-To"))
    return report


def _read(
    msg: Message,
    *,
    from_email: str | None,
    from_name: str | None,
    subject: str | None,
    text: str | None,
) -> Report | None:
    if msg.is_multipart():
        # A report part may sit in a multipart/report, or in a multipart/mixed that some MTAs
        # (Exchange, InterScan) send instead: the parts decide, not the top-level type.
        arf = standard.feedback_report(msg)
        if arf is not None:
            return arf
        dsn = standard.delivery_status(msg, text=text)
        if dsn is not None and dsn.recipients:
            return dsn
    hotmail = msg.get("X-HmXmrOriginalRecipient")
    if hotmail:
        # Microsoft's feedback loop (JMRP): the original attached, the recipient in a header.
        original = standard.original_headers(msg)
        return Report(
            kind="complaint",
            recipients=[r for r in [_complainant(str(hotmail))] if r is not None],
            original_message_id=message_id_in(original.get("Message-ID")) if original else None,
            feedback_type="abuse",
        )
    own = set(addresses_in(" ".join(str(v) for v in msg.get_all("To", [])[:5])[:2000], 20))
    is_report = msg.get_content_type() == "multipart/report"
    if is_report or plain.looks_like_bounce(
        from_email=from_email, from_name=from_name, subject=subject, msg=msg, text=text
    ):
        found = plain.read(msg, text=text, subject=subject, own=own)
        if found is not None:
            original = standard.original_headers(msg)
            if original is not None and original.get("Message-ID"):
                found.original_message_id = message_id_in(original.get("Message-ID"))
            return found
    if autoreply.is_auto_reply(msg, subject=subject):
        return autoreply.read(
            msg, from_email=from_email, original_message_id=message_id_in(msg.get("In-Reply-To"))
        )
    return None


def _complainant(value: str) -> Recipient | None:
    email = address_in(value)
    return Recipient(email=email, reason="spam_detected") if email else None


def detect_fields(
    *,
    headers: list[Any] | None,
    from_email: str | None,
    from_name: str | None,
    subject: str | None,
    text: str | None,
) -> dict[str, Any] | None:
    """The stored report of a message known only by its fields (a Nylas Message object:
    headers when Nylas gave them, no MIME parts): the header checks and the text scan."""
    msg = Message()
    for item in (headers or [])[:200]:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            name, value = item["name"], item.get("value")
            if _HEADER_NAME.match(name) and isinstance(value, str):
                msg[name] = _NEWLINES.sub(" ", value[:4000])
    if msg.get("Subject") is None and subject:
        msg["Subject"] = _NEWLINES.sub(" ", subject[:1000])
    found = detect(msg, from_email=from_email, from_name=from_name, subject=subject, text=text)
    return found.stored() if found is not None else None
