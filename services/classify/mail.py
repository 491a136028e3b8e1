"""One shape for a mail to classify, built from a stored message or from raw RFC 822 bytes."""

from __future__ import annotations

import email
import email.message
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.utils import getaddresses, parseaddr
from functools import cached_property
from typing import Any

from services.messages.html_text import html_to_text
from services.messages.mime import trim_param_headers


@dataclass
class MailDoc:
    subject: str = ""
    from_name: str = ""
    from_email: str = ""
    reply_to: list[str] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    text: str = ""
    html: str = ""
    attachment_names: list[str] = field(default_factory=list)

    @property
    def from_domain(self) -> str:
        return self.from_email.rsplit("@", 1)[-1].lower() if "@" in self.from_email else ""

    @cached_property
    def _header_index(self) -> dict[str, list[str]]:
        index: dict[str, list[str]] = {}
        for name, value in self.headers:
            index.setdefault(name.lower(), []).append(value)
        return index

    def header_values(self, name: str) -> list[str]:
        return self._header_index.get(name, [])

    def has_header(self, name: str) -> bool:
        return name in self._header_index

    @cached_property
    def visible_text(self) -> str:
        if self.text.strip():
            return self.text
        return html_to_text(self.html) if self.html else ""


def _decoded(value: Any) -> str:
    try:
        return str(make_header(decode_header(str(value))))
    except Exception:  # a malformed encoded-word is still worth its raw text
        return str(value)


def _payload_text(part: email.message.Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "latin-1"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("latin-1", errors="replace")


def from_raw(raw: bytes) -> MailDoc:
    """Parse RFC 822 bytes (compat32 policy: several times faster than the modern one)."""
    # A Content-Type or Content-Disposition past 1,000 bytes is cut first: the standard library
    # reads their parameters in quadratic time (services.messages.mime.trim_param_headers).
    msg = email.message_from_bytes(trim_param_headers(raw, []))
    name, addr = parseaddr(_decoded(msg.get("From", "")))
    doc = MailDoc(
        subject=_decoded(msg.get("Subject", "")),
        from_name=name,
        from_email=addr.lower(),
        reply_to=[a.lower() for _, a in getaddresses(msg.get_all("Reply-To", [])) if a],
        headers=[(k, str(v)) for k, v in msg.items()],
    )
    texts, htmls = [], []
    for part in msg.walk():
        if part.is_multipart():
            continue
        filename = part.get_filename()
        if filename:
            doc.attachment_names.append(_decoded(filename))
            continue
        ctype = part.get_content_type()
        if ctype == "text/plain":
            texts.append(_payload_text(part))
        elif ctype == "text/html":
            htmls.append(_payload_text(part))
    doc.text = "\n".join(texts)
    doc.html = "\n".join(htmls)
    return doc


def from_message(message: Any, attachment_names: list[str] | None = None) -> MailDoc:
    """A stored `message` row (and its attachments' names) as a MailDoc."""
    headers = [(str(h[0]), str(h[1])) for h in (message.headers or []) if len(h) >= 2]
    return MailDoc(
        subject=message.subject or "",
        from_name=message.from_name or "",
        from_email=(message.from_email or "").lower(),
        reply_to=[str(a["email"]).lower() for a in message.reply_to or [] if a.get("email")],
        headers=headers,
        text=message.text or "",
        html=message.html or "",
        attachment_names=list(attachment_names or []),
    )
