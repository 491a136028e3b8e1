"""Per-recipient envelopes for sends that ask for them (docs/reports.md): a VERP return path
(`"verp": true`) and RFC 8058 one-click unsubscribe headers (`"unsubscribe": true`). Each
recipient then gets a transaction of its own, with its own MAIL FROM and its own copy of the
headers; the message is otherwise byte for byte the one composed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from urllib.parse import quote

from services.outbound.compose import Composed
from services.reports import tokens
from settings import Settings


@dataclass(frozen=True)
class Envelope:
    recipient: str
    sender: str
    data: bytes


def wanted(options: dict[str, object]) -> bool:
    return bool(options.get("verp") or options.get("unsubscribe"))


def unsubscribe_headers(
    settings: Settings, *, tenant_id: uuid.UUID, recipient: str, sender: str, public_url: str
) -> bytes:
    """`List-Unsubscribe` (https, then mailto) and `List-Unsubscribe-Post` (RFC 8058)."""
    token = tokens.unsubscribe_token(settings, tenant_id=tenant_id, email=recipient)
    link = f"{public_url.rstrip('/')}/u/{token}"
    mailto = f"mailto:{sender}?subject={quote('unsubscribe ' + token)}"
    return (
        f"List-Unsubscribe: <{link}>,\r\n <{mailto}>\r\n"
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    ).encode()


def envelopes(
    settings: Settings,
    *,
    composed: Composed,
    options: dict[str, object],
    tenant_id: uuid.UUID,
    outbound_id: uuid.UUID,
) -> list[Envelope]:
    """One envelope per recipient, in the composed order."""
    domain = composed.envelope_from.rpartition("@")[2]
    public_url = options.get("public_url")
    out = []
    for recipient in composed.recipients:
        sender = composed.envelope_from
        if options.get("verp"):
            sender = tokens.verp_address(
                settings, outbound_id=outbound_id, recipient=recipient, domain=domain
            )
        data = composed.data
        if options.get("unsubscribe") and isinstance(public_url, str) and public_url:
            data = (
                unsubscribe_headers(
                    settings,
                    tenant_id=tenant_id,
                    recipient=recipient,
                    sender=composed.envelope_from,
                    public_url=public_url,
                )
                + data
            )
        out.append(Envelope(recipient=recipient, sender=sender, data=data))
    return out
