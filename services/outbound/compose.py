"""Building the RFC 5322 message a send transmits, with the standard library `email` package.

Bcc recipients are part of the SMTP envelope only: they never appear in a header, so no
recipient learns who was blind-copied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy as email_policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

from services.errors import ValidationFailed
from services.messages.html_text import html_to_text
from services.messages.mime import without_line_breaks

# RFC 5322 addr-spec kept deliberately plain: ASCII, one "@", no spaces, quotes or brackets.
# Internationalised addresses need SMTPUTF8, which we do not negotiate.
_ADDR = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")
_CONTROL = re.compile(r"[\r\n\x00]")
MAX_RECIPIENTS = 500


@dataclass(frozen=True)
class Person:
    email: str
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "email": self.email}


@dataclass(frozen=True)
class AttachmentFile:
    filename: str
    content_type: str
    content: bytes


@dataclass(frozen=True)
class ReplyTarget:
    """What a reply needs of the message it answers."""

    message_id_header: str | None
    references: list[str] = field(default_factory=list)


@dataclass
class Composed:
    message: EmailMessage
    data: bytes
    message_id_header: str
    envelope_from: str
    recipients: list[str]
    in_reply_to: str | None
    references: list[str]


def _refuse_control(value: str, what: str) -> None:
    if _CONTROL.search(value):
        raise ValidationFailed(f"The {what} contains a line break or NUL character.")


def person(value: Any, what: str = "address") -> Person:
    """`"a@b"` or `{"email", "name"?}` -> a checked Person; header injection is refused."""
    if isinstance(value, str):
        email, name = value, None
    elif isinstance(value, dict) and isinstance(value.get("email"), str):
        email, name = value["email"], value.get("name")
    else:
        raise ValidationFailed(f"Each {what} must be an email string or an object with 'email'.")
    if name is not None and not isinstance(name, str):
        raise ValidationFailed(f"The name of an {what} must be a string.")
    _refuse_control(email, what)
    if name:
        _refuse_control(name, f"{what} name")
    email = email.strip()
    if not _ADDR.match(email) or len(email) > 320:
        raise ValidationFailed(f"{email!r} is not a valid {what}.")
    return Person(email=email, name=name.strip() or None if name else None)


def people(values: Any, what: str) -> list[Person]:
    if values is None:
        return []
    if not isinstance(values, list):
        raise ValidationFailed(f"'{what}' must be a list of addresses.")
    return [person(v, what) for v in values]


def _cte(body: str) -> str | None:
    # 8bit needs the server's 8BITMIME; quoted-printable reaches every server unchanged.
    return None if body.isascii() else "quoted-printable"


def _address(p: Person) -> Address:
    local, _, domain = p.email.rpartition("@")
    return Address(display_name=p.name or "", username=local, domain=domain)


def compose(
    *,
    sender: Person,
    to: list[Person],
    cc: list[Person],
    bcc: list[Person],
    subject: str,
    body_text: str | None,
    body_html: str | None,
    attachments: list[AttachmentFile] | None = None,
    reply_to_message: ReplyTarget | None = None,
    message_id_header: str | None = None,
    date: datetime | None = None,
) -> Composed:
    """A complete message plus its envelope (Bcc included there, never in the headers)."""
    if not isinstance(subject, str):
        raise ValidationFailed("The subject must be a string.")
    _refuse_control(subject, "subject")
    recipients = list(dict.fromkeys(p.email for p in (*to, *cc, *bcc)))
    if not recipients:
        raise ValidationFailed("A message needs at least one recipient.")
    if len(recipients) > MAX_RECIPIENTS:
        raise ValidationFailed(f"A message may have at most {MAX_RECIPIENTS} recipients.")
    domain = sender.email.rpartition("@")[2]
    msg_id = message_id_header or make_msgid(domain=domain)
    msg = EmailMessage(policy=email_policy.SMTP)
    msg["From"] = _address(sender)
    if to:
        msg["To"] = [_address(p) for p in to]
    if cc:
        msg["Cc"] = [_address(p) for p in cc]
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date or datetime.now(UTC))
    msg["Message-ID"] = msg_id
    in_reply_to: str | None = None
    references: list[str] = []
    parent_id = (reply_to_message.message_id_header or "") if reply_to_message else ""
    parent_id = without_line_breaks(parent_id).strip()
    if reply_to_message is not None and parent_id:
        # Rows stored before ids lost their line breaks may still hold one: the header would
        # be refused, and the reply with it.
        in_reply_to = parent_id
        parents = (without_line_breaks(r) for r in reply_to_message.references)
        references = [r for r in parents if r and r != in_reply_to] + [in_reply_to]
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = " ".join(references)
    msg["MIME-Version"] = "1.0"

    # An empty text part next to an HTML body is replaced by the HTML's text.
    text = body_text if body_text else (html_to_text(body_html) if body_html else "")
    msg.set_content(text, subtype="plain", charset="utf-8", cte=_cte(text))
    if body_html:
        msg.add_alternative(body_html, subtype="html", charset="utf-8", cte=_cte(body_html))
    for att in attachments or []:
        _refuse_control(att.filename, "attachment filename")
        maintype, _, subtype = (att.content_type or "application/octet-stream").partition("/")
        if not subtype or _CONTROL.search(att.content_type):
            maintype, subtype = "application", "octet-stream"
        msg.add_attachment(att.content, maintype=maintype, subtype=subtype, filename=att.filename)
    return Composed(
        message=msg,
        data=msg.as_bytes(policy=email_policy.SMTP),
        message_id_header=msg_id,
        envelope_from=sender.email,
        recipients=recipients,
        in_reply_to=in_reply_to,
        references=references,
    )
