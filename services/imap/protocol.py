"""IMAP4rev1 wire format: reading whole responses (with literals) and parsing their data items."""

from __future__ import annotations

import base64
import bisect
import re
from collections.abc import Iterable, Iterator
from typing import Any

# A code's text stops at the next "[" too: an unclosed "[A [A [A ..." then costs one scan of
# the line, not one per "[" (RFC 3501 codes carry no brackets in their text).
_CODE = re.compile(rb"\[([A-Z0-9.-]+)(?: ([^\]\[]*))?\]")
_ATOM_END = b" ()\r\n"
# An atom up to its end, stepping over section specs like BODY[HEADER.FIELDS (A B)]. The two
# branches start with different bytes, so the match never backtracks: linear, and in C.
_ATOM = re.compile(rb"(?:[^ ()\r\n\[]+|\[[^\]]*\])*")
# RFC 3501 9: nz-number and uniqueid are 32-bit; mod-sequence values are 63-bit (RFC 7162).
MAX_UID = 2**32 - 1
MAX_NUMBER = 2**63 - 1
# Deeper than any real BODYSTRUCTURE or FETCH answer; a deeper one is a hostile server.
MAX_DEPTH = 64

Item = Any  # str (atom), bytes (string or literal), None (NIL), or list of Item


class ImapProtocolError(ValueError):
    """The server's answer breaks the IMAP grammar or one of our caps."""


def number(value: Any, *, limit: int = MAX_NUMBER) -> int:
    """An IMAP number from an atom or bytes, refused past `limit` (never a 4,000-digit int)."""
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    if not (0 < len(text) <= 20 and text.isascii() and text.isdigit()):
        raise ImapProtocolError("a number was expected")
    n = int(text)
    if n > limit:
        raise ImapProtocolError("a number is out of range")
    return n


def literal_size(line: bytes) -> int | None:
    """The size of the literal a response line announces at its end (`{n}` CRLF), if any."""
    if not line.endswith(b"}\r\n"):
        return None
    tail = line[-64:-3]
    start = tail.rfind(b"{")
    if start == -1:
        if tail.isdigit() and len(tail) == 61:
            raise ImapProtocolError("a literal size is out of range")
        return None
    digits = tail[start + 1 :].removesuffix(b"+")
    return number(digits) if digits.isdigit() else None


class UidSet:
    """A set of UIDs held as sorted, disjoint (lo, hi) ranges: `1:4294967295` is one pair.

    Nothing here ever lists the UIDs of a range; callers intersect with what they hold
    (membership is a binary search) or walk the set with `iter_uids`, which costs what the
    caller consumes.
    """

    __slots__ = ("_his", "_los")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        merged: list[list[int]] = []
        for lo, hi in sorted((min(a, b), max(a, b)) for a, b in ranges):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        self._los = [r[0] for r in merged]
        self._his = [r[1] for r in merged]

    @classmethod
    def parse(cls, text: str | bytes) -> UidSet:
        """An IMAP sequence-set of UIDs (`1:3,7,9:*`); `*` stands for the largest UID."""
        raw = text.decode("ascii", "replace") if isinstance(text, bytes) else text
        ranges: list[tuple[int, int]] = []
        for part in raw.strip().split(","):
            a, colon, b = part.partition(":")
            lo = _uid(a)
            ranges.append((lo, _uid(b) if colon else lo))
        return cls(ranges)

    @classmethod
    def of(cls, uids: Iterable[int]) -> UidSet:
        return cls((u, u) for u in uids)

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._los, self._his, strict=True))

    def __contains__(self, uid: object) -> bool:
        if not isinstance(uid, int):
            return False
        i = bisect.bisect_right(self._los, uid) - 1
        return i >= 0 and uid <= self._his[i]

    def __bool__(self) -> bool:
        return bool(self._los)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UidSet) and self.ranges() == other.ranges()

    def __repr__(self) -> str:
        return f"UidSet({self.wire()!r})"

    @property
    def count(self) -> int:
        """How many UIDs the set names (arithmetic on the ranges, nothing is listed)."""
        return sum(hi - lo + 1 for lo, hi in zip(self._los, self._his, strict=True))

    @property
    def max(self) -> int | None:
        return self._his[-1] if self._his else None

    def union(self, other: UidSet) -> UidSet:
        return UidSet([*self.ranges(), *other.ranges()])

    def below(self, limit: int) -> UidSet:
        """The UIDs smaller than `limit`."""
        return UidSet((lo, min(hi, limit - 1)) for lo, hi in self.ranges() if lo < limit)

    def iter_uids(self) -> Iterator[int]:
        """Every UID in order, lazily: the caller bounds the walk."""
        for lo, hi in zip(self._los, self._his, strict=True):
            yield from range(lo, hi + 1)

    def wire(self) -> str:
        return ",".join(
            str(lo) if lo == hi else f"{lo}:{hi}"
            for lo, hi in zip(self._los, self._his, strict=True)
        )


def _uid(text: str) -> int:
    text = text.strip()
    return MAX_UID if text == "*" else _nonzero(number(text, limit=MAX_UID))


def _nonzero(n: int) -> int:
    if n == 0:
        raise ImapProtocolError("UID 0 does not exist")
    return n


def response_codes(line: bytes) -> dict[str, str]:
    """`[UIDVALIDITY 5]`-style codes of a status line, by upper-case name."""
    return {
        m.group(1).decode(): (m.group(2) or b"").decode("ascii", "replace")
        for m in _CODE.finditer(line)
    }


def copy_uids(lines: Iterable[bytes], *, limit: int) -> tuple[int, dict[int, int]] | None:
    """The RFC 4315 COPYUID of a COPY or MOVE answer: (the target's UIDVALIDITY, source UID ->
    its UID in the target). None when no line has one, or when it does not pair up or names
    more than `limit` UIDs (a hostile answer is never expanded: the caller asked for `limit`).

    The two sets are paired in the order the server wrote them (RFC 4315 section 3).
    """
    for line in lines:
        value = response_codes(line).get("COPYUID")
        if value is None:
            continue
        fields = value.split()
        if len(fields) != 3:
            return None
        try:
            uidvalidity = _nonzero(number(fields[0], limit=MAX_UID))
            sources = _in_order(fields[1], limit)
            targets = _in_order(fields[2], limit)
        except ImapProtocolError:
            return None
        if sources is None or targets is None or len(sources) != len(targets):
            return None
        return uidvalidity, dict(zip(sources, targets, strict=True))
    return None


def _in_order(text: str, limit: int) -> list[int] | None:
    """A sequence-set as written (`304,319:320`), or None past `limit` UIDs or with `*`."""
    out: list[int] = []
    for part in text.split(","):
        a, colon, b = part.partition(":")
        if "*" in (a, b):
            return None
        lo = _uid(a)
        hi = _uid(b) if colon else lo
        step = 1 if hi >= lo else -1
        if len(out) + abs(hi - lo) + 1 > limit:
            return None
        out.extend(range(lo, hi + step, step))
    return out


def parse_items(data: bytes, pos: int = 0) -> list[Item]:
    """Every item from `pos` to the end of one response (CRLF excluded).

    A response that breaks the grammar (an unclosed string, a literal past the end, nesting
    deeper than MAX_DEPTH) is an ImapProtocolError, never an IndexError or a RecursionError.
    """
    try:
        items, pos = _parse_sequence(data, pos, closing=None, depth=0)
    except (IndexError, ValueError) as exc:
        if isinstance(exc, ImapProtocolError):
            raise
        raise ImapProtocolError("the server sent a response that cannot be read") from None
    return items


def _parse_sequence(
    data: bytes, pos: int, closing: int | None, depth: int
) -> tuple[list[Item], int]:
    if depth > MAX_DEPTH:
        raise ImapProtocolError("the server sent a response nested too deep")
    out: list[Item] = []
    end = len(data)
    while pos < end:
        c = data[pos]
        if c in (0x20, 0x0D, 0x0A):  # space, CR, LF
            pos += 1
        elif c == closing:
            return out, pos + 1
        elif c == 0x28:  # (
            sub, pos = _parse_sequence(data, pos + 1, closing=0x29, depth=depth + 1)
            out.append(sub)
        elif c == 0x22:  # "
            value, pos = _parse_quoted(data, pos + 1)
            out.append(value)
        elif c == 0x7B:  # {
            close = data.index(b"}", pos)
            size = number(data[pos + 1 : close].rstrip(b"+"))
            start = close + 3  # "}\r\n"
            if start + size > end:
                raise ImapProtocolError("a literal runs past the end of the response")
            out.append(data[start : start + size])
            pos = start + size
        else:
            start = pos
            match = _ATOM.match(data, pos)
            pos = match.end() if match else pos
            # No progress: a "[" never closed, or a ")" that closes nothing.
            if pos == start or (pos < end and data[pos] == 0x5B):
                raise ImapProtocolError("the server sent a response that cannot be read")
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


def uid_set(uids: Iterable[int]) -> str:
    """Compress UIDs into ranges for a command: 1,2,3,7 -> 1:3,7."""
    return UidSet.of(uids).wire()


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
