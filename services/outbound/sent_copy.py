"""Appending a copy of a sent message to the account's IMAP Sent folder (RFC 3501 APPEND).

Over postroom's own IMAP client (services/imap/client.py), so the Sent copy connects, checks the
destination (services/destination.py), negotiates TLS and logs in exactly as the sync does:
one credential either works for both or fails for both, with the same sentences.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services import destination
from services.errors import PostroomError, TransientError
from services.imap.client import ImapClient, ImapConfig
from services.imap.protocol import ImapProtocolError, number

# Where a server without a \Sent special-use folder usually keeps sent mail, in this order.
_SENT_NAMES = ("Sent", "Sent Items", "Sent Messages", "INBOX.Sent")
SENT_COPY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Appended:
    folder: str  # the folder's name as the sync stores it (decoded from modified UTF-7)
    uidvalidity: int | None
    uid: int | None
    wire_name: str = ""  # the name on the wire (the folder row's provider_id)


async def _find_sent(client: ImapClient) -> tuple[str, str]:
    """(name, wire name) of the \\Sent folder, else a usual name, else a new "Sent"."""
    boxes = [b for b in await client.list_mailboxes() if b.selectable]
    for box in boxes:
        if box.role == "sent":
            return box.display_name, box.name
    by_name = {b.display_name: b for b in boxes}
    for candidate in _SENT_NAMES:
        if candidate in by_name:
            return candidate, by_name[candidate].name
    await client.create("Sent")
    return "Sent", "Sent"


def _appenduid(codes: dict[str, str]) -> tuple[int | None, int | None]:
    """RFC 4315 APPENDUID <uidvalidity> <uid>; (None, None) without UIDPLUS or when unreadable."""
    parts = codes.get("APPENDUID", "").split()
    if len(parts) != 2:
        return None, None
    try:
        return number(parts[0]), number(parts[1])
    except (ImapProtocolError, ValueError):
        return None, None


async def append_sent_copy(
    imap: dict[str, Any],
    *,
    folder: str | None,
    data: bytes,
    when: datetime,
    allowed_private_hosts: str | None = None,
) -> Appended:
    """APPEND `data` as \\Seen to `folder` (a wire name; else the server's \\Sent folder).

    `allowed_private_hosts`: POSTROOM_ALLOWED_PRIVATE_MAIL_HOSTS (None: the process settings).
    Failures are the client's own sentences, never the server's words.
    """
    config = ImapConfig.from_credentials(
        {"imap": imap}, timeout=SENT_COPY_TIMEOUT_S, allowed_private_hosts=allowed_private_hosts
    )
    try:
        async with ImapClient(config) as client:
            if folder is not None:
                name = wire = folder
            else:
                name, wire = await _find_sent(client)
            codes = await client.append_one(wire, data, flags="\\Seen", when=when)
    except PostroomError:
        raise
    except (OSError, TimeoutError) as exc:
        raise TransientError(
            f"Appending the sent copy failed: {destination.failure_kind(exc)}."
        ) from None
    uidvalidity, uid = _appenduid(codes)
    return Appended(name, uidvalidity, uid, wire_name=wire)
