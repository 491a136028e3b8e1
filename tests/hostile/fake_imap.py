"""A scripted IMAP server on loopback: a hostile PEER for the tests.

It speaks just enough IMAP4rev1 (+ CONDSTORE/QRESYNC/ESEARCH) for one sync of one INBOX, and
lets a test answer any message's FETCH with the bytes a misbehaving server would send:
garbage, a lying size, a 99999999999-byte literal, a hang-up half-way. Dovecot does none of
these, which is why this exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import Any

CAPS = b"IMAP4rev1 LITERAL+ ENABLE CONDSTORE QRESYNC ESEARCH UIDPLUS"
HANGUP = b"<hang up>"

# (uid, items of the command) -> the bytes to send for that message, HANGUP, or None (normal).
Hook = Callable[[int, bytes], bytes | None]


def _uids_in(spec: bytes, top: int) -> set[int]:
    out: set[int] = set()
    for part in spec.decode().split(","):
        a, _, b = part.partition(":")
        lo = top if a == "*" else int(a)
        hi = lo if not b else (top if b == "*" else int(b))
        lo, hi = min(lo, hi), max(lo, hi)
        out.update(u for u in range(lo, min(hi, top) + 1))
    return out


class FakeImap:
    def __init__(
        self, messages: dict[int, bytes], *, uidvalidity: int = 7, notify_flood: int = 0
    ) -> None:
        """`notify_flood`: offer IDLE and NOTIFY, and answer each IDLE with that many
        `* STATUS` lines about folders that do not exist, new names every round."""
        self.messages = dict(messages)
        self.notify_flood = notify_flood
        self.caps = CAPS + (b" IDLE NOTIFY" if notify_flood else b"")
        self.idle_rounds = 0
        self.uidvalidity = uidvalidity
        self.modseq = 10
        self.declared: dict[int, int] = {}  # RFC822.SIZE lies
        self.hook: Hook | None = None
        self.vanished: bytes | None = None  # sent for FETCH ... (CHANGEDSINCE .. VANISHED)
        self.commands: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> FakeImap:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        for w in self._writers:
            w.close()
        if self._server is not None:
            self._server.close()

    def config(self, **kw: Any) -> Any:
        from services.imap.client import ImapConfig

        return ImapConfig(
            host="127.0.0.1", port=self.port, username="u", password="p", security="none", **kw
        )

    def fetched_with(self, item: bytes) -> list[bytes]:
        """The UID FETCH commands received that asked for `item`."""
        return [c for c in self.commands if b"UID FETCH" in c.upper() and item in c.upper()]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        writer.write(b"* OK [CAPABILITY " + self.caps + b"] fake ready\r\n")
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while line := await reader.readline():
                self.commands.append(line)
                tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
                if rest.upper() == b"IDLE" and self.notify_flood:
                    await self._flood(tag, reader, writer)
                    continue
                if not await self._answer(tag, rest, writer):
                    break
                await writer.drain()
        writer.close()

    async def _answer(self, tag: bytes, rest: bytes, w: asyncio.StreamWriter) -> bool:
        verb = rest.split(b" ", 1)[0].upper()
        upper = rest.upper()
        if verb == b"CAPABILITY":
            w.write(b"* CAPABILITY " + self.caps + b"\r\n")
        elif verb == b"ENABLE":
            w.write(b"* ENABLED QRESYNC\r\n")
        elif verb == b"LIST":
            w.write(b'* LIST (\\HasNoChildren) "/" INBOX\r\n')
        elif verb in (b"SELECT", b"EXAMINE"):
            top = max(self.messages, default=0)
            w.write(b"* %d EXISTS\r\n" % len(self.messages))
            w.write(b"* OK [UIDVALIDITY %d] ok\r\n" % self.uidvalidity)
            w.write(b"* OK [UIDNEXT %d] ok\r\n" % (top + 1))
            w.write(b"* OK [HIGHESTMODSEQ %d] ok\r\n" % self.modseq)
        elif verb == b"LOGOUT":
            w.write(b"* BYE bye\r\n" + tag + b" OK done\r\n")
            return False
        elif upper.startswith(b"UID SEARCH"):
            w.write(b"* SEARCH " + b" ".join(b"%d" % u for u in sorted(self.messages)) + b"\r\n")
        elif upper.startswith(b"UID FETCH") and not self._fetch(rest, w):
            await w.drain()  # a hang-up: what was written goes out, then the socket closes
            return False
        w.write(tag + b" OK done\r\n")
        return True

    async def _flood(
        self, tag: bytes, reader: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> None:
        """One IDLE round: news of `notify_flood` folders no one created, then DONE."""
        self.idle_rounds += 1
        w.write(b"+ idling\r\n")
        for i in range(self.notify_flood):
            name = b"Flood-%d-%d-%s" % (self.idle_rounds, i, os.urandom(4).hex().encode())
            w.write(b'* STATUS "' + name + b'" (MESSAGES 1 UIDNEXT 2)\r\n')
        await w.drain()
        while (line := await reader.readline()) and line.strip().upper() != b"DONE":
            pass
        w.write(tag + b" OK idle done\r\n")
        await w.drain()

    def _fetch(self, rest: bytes, w: asyncio.StreamWriter) -> bool:
        spec, items = rest.split(b" ", 3)[2], rest.split(b" ", 3)[3].upper()
        if b"CHANGEDSINCE" in items:
            if self.vanished is not None:
                w.write(b"* VANISHED (EARLIER) " + self.vanished + b"\r\n")
            return True
        top = max(self.messages, default=0)
        for seq, uid in enumerate(sorted(_uids_in(spec, top) & set(self.messages)), start=1):
            special = self.hook(uid, items) if self.hook else None
            if special == HANGUP:
                w.write(b"* %d FETCH (UID %d BODY[] {5000}\r\nonly the start" % (seq, uid))
                return False
            w.write(special if special is not None else self._normal(seq, uid, items))
        return True

    def _normal(self, seq: int, uid: int, items: bytes) -> bytes:
        raw = self.messages[uid]
        parts = [b"UID %d" % uid]
        if b"FLAGS" in items:
            parts.append(b"FLAGS ()")
        if b"INTERNALDATE" in items:
            parts.append(b'INTERNALDATE "01-Jan-2026 10:00:00 +0000"')
        if b"RFC822.SIZE" in items:
            parts.append(b"RFC822.SIZE %d" % self.declared.get(uid, len(raw)))
        if b"MODSEQ" in items:
            parts.append(b"MODSEQ (%d)" % self.modseq)
        if b"BODY.PEEK[HEADER]" in items:
            head = raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
            parts.append(b"BODY[HEADER] {%d}\r\n" % len(head) + head)
        elif b"BODY.PEEK[]" in items:
            parts.append(b"BODY[] {%d}\r\n" % len(raw) + raw)
        return b"* %d FETCH (" % seq + b" ".join(parts) + b")\r\n"
