"""Reading the IMAP answers the client asks for: LIST/STATUS, SELECT, SEARCH/ESEARCH, FETCH.

Every number goes through `number()` and every UID set through `UidSet`, so an answer costs
what its bytes cost: `* VANISHED 1:4294967295` is one range, `UID 99999999999` is an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import structlog

from services.imap.protocol import (
    MAX_UID,
    ImapProtocolError,
    UidSet,
    decode_mutf7,
    number,
    pairs,
    parse_items,
    response_codes,
)

SPECIAL_USE = {
    "\\sent": "sent",
    "\\trash": "trash",
    "\\junk": "junk",
    "\\drafts": "drafts",
    "\\archive": "archive",
    "\\all": "archive",
}
_UID_IN_FETCH = re.compile(rb"\bUID (\d{1,10})\b", re.IGNORECASE)

log = structlog.get_logger(__name__)


@dataclass
class MailboxInfo:
    name: str  # as on the wire (modified UTF-7)
    display_name: str
    delimiter: str | None
    flags: list[str]
    role: str | None
    status: dict[str, int] = field(default_factory=dict)

    @property
    def selectable(self) -> bool:
        return "\\noselect" not in self.flags and "\\nonexistent" not in self.flags


@dataclass
class SelectInfo:
    uidvalidity: int
    uidnext: int | None
    highest_modseq: int | None
    exists: int
    vanished: UidSet = field(default_factory=UidSet)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def mailboxes(untagged: list[bytes]) -> list[MailboxInfo]:
    """LIST answers (with their SPECIAL-USE role) joined with LIST-STATUS answers."""
    boxes: dict[str, MailboxInfo] = {}
    statuses: dict[str, dict[str, int]] = {}
    for resp in untagged:
        head = resp[:9].upper()
        if head.startswith(b"* LIST "):
            items = parse_items(resp, 7)
            if len(items) < 3 or not isinstance(items[0], list):
                raise ImapProtocolError("a LIST answer lacks its fields")
            flags, delim, name = items[:3]
            wire = _text(name)
            lower = [str(f).lower() for f in flags]
            role = (
                "inbox"
                if wire.upper() == "INBOX"
                else next((SPECIAL_USE[f] for f in lower if f in SPECIAL_USE), None)
            )
            boxes[wire] = MailboxInfo(
                name=wire,
                display_name=decode_mutf7(wire),
                flags=lower,
                role=role,
                delimiter=_text(delim) if delim is not None else None,
            )
        elif head.startswith(b"* STATUS "):
            items = parse_items(resp, 9)
            if len(items) < 2 or not isinstance(items[1], list):
                raise ImapProtocolError("a STATUS answer lacks its fields")
            statuses[_text(items[0])] = {
                str(k).upper(): number(v) for k, v in pairs(items[1]).items()
            }
    for wire, st in statuses.items():
        if wire in boxes:
            boxes[wire].status = st
    return list(boxes.values())


def select_info(responses: list[bytes]) -> SelectInfo:
    info = SelectInfo(uidvalidity=0, uidnext=None, highest_modseq=None, exists=0)
    for resp in responses:
        codes = response_codes(resp)
        if "UIDVALIDITY" in codes:
            info.uidvalidity = number(codes["UIDVALIDITY"], limit=MAX_UID)
        if "UIDNEXT" in codes:
            info.uidnext = number(codes["UIDNEXT"], limit=MAX_UID + 1)
        if "HIGHESTMODSEQ" in codes:
            info.highest_modseq = number(codes["HIGHESTMODSEQ"])
        parts = resp.split(maxsplit=3)
        if len(parts) >= 3 and parts[2].upper() == b"EXISTS":
            info.exists = number(parts[1], limit=MAX_UID)
    return info


def search_ranges(resp: bytes, ranges: list[tuple[int, int]]) -> None:
    """Add the UIDs of a `* SEARCH n n ...` or `* ESEARCH ... ALL set` answer to `ranges`.

    Consecutive UIDs of a plain SEARCH join the range before them, so a mailbox without gaps
    is held as one pair whatever its size.
    """
    head = resp[:10].upper()
    if head.startswith(b"* SEARCH"):
        for token in resp[8:].split():
            uid = number(token, limit=MAX_UID)
            if ranges and ranges[-1][1] + 1 == uid:
                ranges[-1] = (ranges[-1][0], uid)
            else:
                ranges.append((uid, uid))
    elif head.startswith(b"* ESEARCH"):
        items = parse_items(resp, 9)
        for i, item in enumerate(items[:-1]):
            if isinstance(item, str) and item.upper() == "ALL":
                ranges.extend(UidSet.parse(_text(items[i + 1])).ranges())


def fetch_attrs(resp: bytes) -> dict[str, Any] | None:
    """One `* n FETCH (...)` answer as a dict, or `{"UID", "PROBLEM"}` when it is unreadable."""
    try:
        start = resp.index(b"(")
        items = parse_items(resp, start)
        if not items or not isinstance(items[0], list):
            raise ImapProtocolError("a FETCH answer without its attribute list")
        attrs = pairs(items[0])
        if "UID" not in attrs:
            return None  # an unsolicited flag update without UID: nothing to key it by
        attrs["UID"] = number(attrs["UID"], limit=MAX_UID)
        return attrs
    except (ImapProtocolError, ValueError):
        found = _UID_IN_FETCH.search(resp[:200])
        log.warning("imap_fetch_unreadable", has_uid=found is not None, size=len(resp))
        if found is None:
            return None
        return {"UID": int(found.group(1)), "PROBLEM": "the server's answer for it is unreadable"}
