"""IMAP4rev1 wire format: reading whole responses (with literals) and parsing their data items."""

from __future__ import annotations

import base64
import re
from typing import Any

_LITERAL_AT_END = re.compile(rb"\{(\d+)\+?\}\r\n$")
_CODE = re.compile(rb"\[([A-Z0-9.-]+)(?: ([^\]]*))?\]")
_ATOM_END = b" ()\r\n"

Item = Any  # str (atom), bytes (string or literal), None (NIL), or list of Item


def literal_size(line: bytes) -> int | None:
    """The size of the literal a response line announces at its end, if any."""
    m = _LITERAL_AT_END.search(line)
    return int(m.group(1)) if m else None


def response_codes(line: bytes) -> dict[str, str]:
    """`[UIDVALIDITY 5]`-style codes of a status line, by upper-case name."""
    return {
        m.group(1).decode(): (m.group(2) or b"").decode("ascii", "replace")
        for m in _CODE.finditer(line)
    }


def parse_items(data: bytes, pos: int = 0) -> list[Item]:
    """Every item from `pos` to the end of one response (CRLF excluded)."""
    items, pos = _parse_sequence(data, pos, closing=None)
    return items


def _parse_sequence(data: bytes, pos: int, closing: int | None) -> tuple[list[Item], int]:
    out: list[Item] = []
    end = len(data)
    while pos < end:
        c = data[pos]
        if c in (0x20, 0x0D, 0x0A):  # space, CR, LF
            pos += 1
        elif c == closing:
            return out, pos + 1
        elif c == 0x28:  # (
            sub, pos = _parse_sequence(data, pos + 1, closing=0x29)
            out.append(sub)
        elif c == 0x22:  # "
            value, pos = _parse_quoted(data, pos + 1)
            out.append(value)
        elif c == 0x7B:  # {
            close = data.index(b"}", pos)
            size = int(data[pos + 1 : close].rstrip(b"+"))
            start = close + 3  # "}\r\n"
            out.append(data[start : start + size])
            pos = start + size
        else:
            start = pos
            while pos < end and data[pos] not in _ATOM_END:
                if data[pos] == 0x5B:  # [ : a section spec like BODY[HEADER.FIELDS (A B)]
                    pos = data.index(b"]", pos)
                pos += 1
            atom = data[start:pos].decode("ascii", "replace")
            out.append(None if atom.upper() == "NIL" else atom)
    return out, pos


def _parse_quoted(data: bytes, pos: int) -> tuple[bytes, int]:
    buf = bytearray()
    while True:
        c = data[pos]
        if c == 0x5C:  # backslash escape
            buf.append(data[pos + 1])
            pos += 2
        elif c == 0x22:
            return bytes(buf), pos + 1
        else:
            buf.append(c)
            pos += 1


def pairs(items: list[Item]) -> dict[str, Item]:
    """A FETCH attribute list `(UID 5 FLAGS (...) BODY[] {n}...)` as a dict by upper-case name."""
    return {str(items[i]).upper(): items[i + 1] for i in range(0, len(items) - 1, 2)}


def quote(value: str) -> bytes:
    """An IMAP quoted string (callers send literals for anything with CR, LF or 8-bit)."""
    return b'"' + value.encode().replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def uid_set(uids: list[int]) -> str:
    """Compress sorted UIDs into ranges: 1,2,3,7 -> 1:3,7."""
    ranges: list[str] = []
    ordered = sorted(set(uids))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        ranges.append(str(ordered[i]) if i == j else f"{ordered[i]}:{ordered[j]}")
        i = j + 1
    return ",".join(ranges)


def parse_uid_set(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        if ":" in part:
            a, b = part.split(":", 1)
            lo, hi = sorted((int(a), int(b)))
            out.extend(range(lo, hi + 1))
        elif part.strip():
            out.append(int(part))
    return out


def decode_mutf7(name: str) -> str:
    """RFC 3501 modified UTF-7 mailbox name -> str."""
    out: list[str] = []
    i = 0
    while i < len(name):
        if name[i] == "&":
            j = name.find("-", i)
            if j == -1:
                return name
            chunk = name[i + 1 : j]
            if not chunk:
                out.append("&")
            else:
                b64 = chunk.replace(",", "/")
                b64 += "=" * (-len(b64) % 4)
                try:
                    out.append(base64.b64decode(b64).decode("utf-16-be"))
                except ValueError:
                    return name
            i = j + 1
        else:
            out.append(name[i])
            i += 1
    return "".join(out)
