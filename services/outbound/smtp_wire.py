"""The transaction part of an SMTP session (MAIL, RCPT, DATA, RSET, QUIT) on the transport that
aiosmtplib opened, greeted, secured and authenticated.

aiosmtplib reads one reply per command it wrote and drops whatever arrives while it is not
waiting, so it cannot PIPELINE (RFC 2920): replies to a group of commands written at once would
be lost. This protocol queues every reply the server sends, in order, and hands them out by
count, so a client can write MAIL, all RCPTs and DATA in one go and then read their replies.

It is also lean on purpose: with aiosmtplib's per-command lock, timer and re-parsing, postroom
spent 4x smtp-source's CPU per message in bench_smtp; with this reader about 1x.

What the server sends is bounded and checked: a line longer than `MAX_LINE`, a reply longer
than `MAX_REPLY`, a line that is not `ddd`, `ddd text` or `ddd-text` (with one code for all
lines of a reply), or more than `MAX_SURPLUS` replies nobody asked for breaks the session with
`WireError`; its text never quotes the server.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from typing import NamedTuple

from services.errors import ValidationFailed

# RFC 5321 4.5.3.1.5 allows 512 octets per reply line; real servers stay far below this.
MAX_LINE = 8192
# Every line of one multi-line reply together (an EHLO answer is a few hundred bytes).
MAX_REPLY = 65536
# Replies beyond those a read asked for that are kept before the session is given up: room
# for an unsolicited 421, not for a server streaming replies into our memory.
MAX_SURPLUS = 16


# RFC 5321 2.3.8 / 4.5.2: content goes out with CRLF line ends and leading dots doubled.
_LINE_ENDS = re.compile(rb"\r\n|\n|\r")
_LEADING_DOT = re.compile(rb"(?m)^\.")
_UNSAFE_IN_PATH = re.compile(r"[<>\s\x00-\x1f\x7f]")


def envelope_path(address: str) -> bytes:
    """`<address>` for MAIL/RCPT; anything that could break the command line is refused."""
    if not address or not address.isascii() or _UNSAFE_IN_PATH.search(address):
        raise ValidationFailed(f"{address!r} cannot be used as an SMTP envelope address.")
    return b"<" + address.encode("ascii") + b">"


def dot_stuffed(data: bytes) -> bytes:
    """The content as DATA carries it, ended by the lone dot (checks first: compose already
    writes CRLF, and a regex pass over every message would cost more than the rest)."""
    crlf = data.count(b"\r\n")
    if data.count(b"\n") != crlf or data.count(b"\r") != crlf:
        data = _LINE_ENDS.sub(b"\r\n", data)
    if data.startswith(b".") or b"\n." in data:
        data = _LEADING_DOT.sub(b"..", data)
    return data + b".\r\n" if data.endswith(b"\r\n") else data + b"\r\n.\r\n"


class Reply(NamedTuple):
    code: int
    # The text without the codes, lines joined by "\n"; kept as bytes until someone needs it
    # (only the final answer and refusals are ever decoded).
    raw: bytes

    @property
    def text(self) -> str:
        return self.raw.decode("utf-8", "replace")

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


class WireError(Exception):
    """The session cannot go on; the message says why in our words, never the server's."""


class ConnectionClosed(WireError):
    pass


class WireTimeout(WireError):
    pass


class Wire(asyncio.BufferedProtocol):
    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        # Read into one buffer kept for the session: a plain Protocol's recv() allocates 256
        # KiB per read, which glibc serves with mmap/mremap/munmap, three more system calls
        # per read (strace); without them the kernel time per message about halved.
        self._buffer = bytearray(4 * MAX_LINE)
        self._view = memoryview(self._buffer)
        self._filled = 0  # bytes of an unfinished line at the start of the buffer
        self._lines: list[bytes] = []  # the lines so far of a multi-line reply
        self._pending = 0  # their length together
        self._replies: deque[Reply] = deque()
        self._want = 0  # replies the pending read asks for (0 between reads)
        self._waiter: asyncio.Future[None] | None = None
        self._failure: WireError | None = None
        self._loop = asyncio.get_running_loop()
        # One lazy timer instead of one per read (each would be a heap push, a cancel and a
        # task cancel scope per reply): a read only moves `_deadline` on; when the timer
        # fires early it re-arms itself for the deadline in force.
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        transport.set_protocol(self)

    @property
    def usable(self) -> bool:
        """Connected, nothing broken, and no reply waiting that nobody asked for."""
        return self._failure is None and not self._replies and not self.transport.is_closing()

    @property
    def surplus(self) -> bool:
        """Replies in that no command asked for (a server out of step with us)."""
        return bool(self._replies)

    def write(self, data: bytes) -> None:
        if self._failure is not None:
            raise self._failure
        if self.transport.is_closing():
            raise ConnectionClosed("the server closed the connection")
        self.transport.write(data)

    def deadline(self, seconds: float) -> float:
        """The loop time `seconds` from now, for `read`."""
        return self._loop.time() + seconds

    async def read(self, count: int, deadline: float) -> list[Reply]:
        """The next `count` replies, in the order the server sent them; `WireTimeout` (and a
        broken session) if they are not all in by `deadline`."""
        replies = self._replies
        if len(replies) < count:
            if self._failure is not None:
                raise self._failure
            self._want = count
            self._deadline = deadline
            timer = self._timer
            if timer is None or timer.when() > deadline:  # (later: a big message's deadline)
                if timer is not None:
                    timer.cancel()
                self._timer = self._loop.call_at(deadline, self._check_deadline)
            self._waiter = waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
                self._want = 0
        if count == 1:
            return [replies.popleft()]
        return [replies.popleft() for _ in range(count)]

    def _check_deadline(self) -> None:
        self._timer = None
        if self._waiter is None or self._failure is not None:
            return  # the next read arms it again
        if self._loop.time() >= self._deadline:
            self._fail(WireTimeout("timed out"))
        else:
            self._timer = self._loop.call_at(self._deadline, self._check_deadline)

    def close(self) -> None:
        """Close after what was written has gone out (after QUIT)."""
        self._fail(ConnectionClosed("the connection was closed"), abort=False)
        self.transport.close()

    def abort(self) -> None:
        """Drop the connection now (mid-DATA this makes the server discard the transaction)."""
        self._fail(ConnectionClosed("the connection was closed"))
        self.transport.abort()

    # asyncio.BufferedProtocol

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view[self._filled :]

    def buffer_updated(self, nbytes: int) -> None:
        if self._failure is not None:
            return
        end = self._filled + nbytes
        data = bytes(self._view[:end])
        last = data.rfind(b"\n")
        rest = end - last - 1  # after the last line end (all of it if there is none)
        if rest > MAX_LINE:
            self._fail(WireError(f"the server sent a line longer than {MAX_LINE} bytes"))
            return
        self._buffer[:rest] = data[last + 1 :]
        self._filled = rest
        if last < 0:
            return
        for line in data[:last].split(b"\n"):
            # The common case inline: a one-line reply, "250 2.1.0 Ok\r".
            if line[3:4] == b" " and not self._lines and line[:3].isdigit():
                if len(line) > MAX_LINE:
                    self._fail(WireError(f"the server sent a line longer than {MAX_LINE} bytes"))
                    return
                self._replies.append(Reply(int(line[:3]), line[4:].strip()))
            elif not self._line(line):
                return
        if len(self._replies) > self._want + MAX_SURPLUS:
            self._fail(WireError("the server sent more replies than commands"))
            return
        waiter = self._waiter
        if waiter is not None and len(self._replies) >= self._want and not waiter.done():
            waiter.set_result(None)

    def _line(self, line: bytes) -> bool:
        if len(line) > MAX_LINE:
            self._fail(WireError(f"the server sent a line longer than {MAX_LINE} bytes"))
            return False
        code, mark = line[:3], line[3:4]
        if not (code.isdigit() and mark in (b" ", b"-", b"", b"\r")) or (
            self._lines and self._lines[0][:3] != code
        ):
            self._fail(WireError("the server sent a line that is not an SMTP reply"))
            return False
        self._pending += len(line)
        if self._pending > MAX_REPLY:
            self._fail(WireError(f"the server sent a reply longer than {MAX_REPLY} bytes"))
            return False
        if mark == b"-":
            self._lines.append(line)
            return True
        if self._lines:
            self._lines.append(line)
            raw = b"\n".join(part[4:].strip() for part in self._lines)
            self._lines = []
        else:
            raw = line[4:].strip()
        self._pending = 0
        self._replies.append(Reply(int(code), raw))
        return True

    def eof_received(self) -> bool:
        self._fail(ConnectionClosed("the server closed the connection"))
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionClosed("the server closed the connection"))

    def _fail(self, failure: WireError, *, abort: bool = True) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._failure is None:
            self._failure = failure
            if abort and not self.transport.is_closing():
                self.transport.abort()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(self._failure)
