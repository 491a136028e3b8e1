"""Small readers shared by the report parsers: header blocks, addresses, ids, caps."""

from __future__ import annotations

import re
from email import message_from_string
from email.message import Message
from email.policy import compat32

from services.reports.model import MAX_DIAGNOSTIC, MAX_EMAIL, MAX_ID

# A part the report parsers read is cut here first: a delivery-status or feedback-report part
# is a few hundred bytes per recipient, and the original's headers a few KB.
PART_CAP = 64 * 1024
MAX_BLOCKS = 101

ADDR_PATTERN = (
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,10}"
)
_ADDR = re.compile(ADDR_PATTERN)
_MSGID = re.compile(r"<[^<>\s]{1,990}>")
_SPACE = re.compile(r"\s+")


def one_line(value: object, cap: int = MAX_DIAGNOSTIC) -> str | None:
    """A header value unfolded into one line and capped; None when empty."""
    if value is None:
        return None
    text = _SPACE.sub(" ", str(value)[: cap * 2]).strip()
    return text[:cap] or None


_PREFIX = re.compile(r"^(?:smtp|rfc822|x400|ex)[=:]", re.IGNORECASE)


def _clean(match: str) -> str | None:
    """An address as found in text, without quotes or dots around it, without an Exchange
    `SMTP=` prefix, its domain lowercased."""
    local, _, domain = match.strip(".'`").rpartition("@")
    local = _PREFIX.sub("", local).strip(".'`")
    domain = domain.strip(".").lower()
    if not local or "." not in domain:
        return None
    return f"{local}@{domain}"[:MAX_EMAIL]


def address_in(value: str | None) -> str | None:
    """The first mail address in a value (`rfc822; bob@example.com`, `<bob@x>`), lowercased
    domain; None without one."""
    if not value:
        return None
    m = _ADDR.search(value[: MAX_EMAIL * 4])
    return _clean(m.group()) if m else None


def addresses_in(value: str, limit: int) -> list[str]:
    """Every address in the text, in order, at most `limit`."""
    out: list[str] = []
    for m in _ADDR.finditer(value):
        found = _clean(m.group())
        if found:
            out.append(found)
        if len(out) >= limit:
            break
    return out


def message_id_in(value: object) -> str | None:
    if value is None:
        return None
    m = _MSGID.search(str(value)[: MAX_ID * 2])
    return m.group()[:MAX_ID] if m else None


def blocks_of(text: str) -> list[dict[str, str]]:
    """RFC 3464 / RFC 5965 field blocks (header-like groups split by blank lines): lowercase
    field name -> unfolded value. The first of a repeated field wins."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last: str | None = None
    for line in text[:PART_CAP].splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                if len(blocks) >= MAX_BLOCKS:
                    return blocks
            current, last = {}, None
            continue
        if line[0] in " \t" and last is not None:
            if len(current[last]) < MAX_DIAGNOSTIC * 2:
                current[last] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep or " " in name.strip():
            last = None
            continue
        key = name.strip().lower()
        if key in current:
            last = None  # a repeat: its continuation lines are not the first's
            continue
        current[key] = value.strip()
        last = key
    if current:
        blocks.append(current)
    return blocks


def part_text(part: Message) -> str:
    """A leaf part's text, decoded and capped (a message/* part as its header text)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        # The stdlib parses message/delivery-status into header blocks and message/* into
        # one message; their header text is what the field readers want.
        out = []
        size = 0
        for sub in payload[:MAX_BLOCKS]:
            if isinstance(sub, Message):
                chunk = "".join(f"{k}: {v}\n" for k, v in sub.items())
                out.append(chunk)
                size += len(chunk)
                if size > PART_CAP:
                    break
        return "\n".join(out)[:PART_CAP]
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if isinstance(data, bytes):
        charset = part.get_content_charset() or "utf-8"
        try:
            return data[:PART_CAP].decode(charset, "replace")
        except LookupError:
            return data[:PART_CAP].decode("utf-8", "replace")
    return str(payload or "")[:PART_CAP]


def embedded_headers(part: Message) -> Message | None:
    """The original message's headers from a message/rfc822 or text/rfc822-headers part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        first = payload[0] if payload else None
        return first if isinstance(first, Message) else None
    text = part_text(part)
    head = text.split("\n\n", 1)[0].split("\r\n\r\n", 1)[0]
    try:
        return message_from_string(head[:PART_CAP], policy=compat32)
    except Exception:
        return None
