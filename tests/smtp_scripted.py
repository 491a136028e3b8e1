"""A raw SMTP server on loopback, in the test's own event loop, for what aiosmtpd cannot show:
which commands arrived in one read (did the client pipeline, or wait for each reply?), and
hostile or broken answers at an exact point of a transaction.

`answer(verb, line)` may return the reply bytes for a command (None: the normal answer), or
DROP (hang up at once) or HANG (never answer). The verb of the end of a message's content is
"." and its line is the content. Contents the server read to the end are in `contents`,
whatever it answered: a server that hangs up after them may well have queued them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.peers import free_port

DROP, HANG = b"<drop>", b"<hang>"
Answer = Callable[[str, bytes], bytes | None]
SECRET = "SECRET-REPLY-TEXT-4d2e"  # put in replies; must never reach an error's text


def _normal(verb: str) -> bytes:
    return {
        "MAIL": b"250 2.1.0 Ok\r\n",
        "RCPT": b"250 2.1.5 Ok\r\n",
        "DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n",
        ".": b"250 2.0.0 Ok: queued\r\n",
        "RSET": b"250 2.0.0 Ok\r\n",
        "QUIT": b"221 2.0.0 Bye\r\n",
        "NOOP": b"250 2.0.0 Ok\r\n",
    }.get(verb, b"502 5.5.2 Error: command not recognized\r\n")


@dataclass
class ScriptedSmtp:
    pipelining: bool = True
    answer: Answer = field(default=lambda verb, line: None)
    port: int = field(default_factory=free_port)
    # Per read of the socket, the commands it brought (content is not listed).
    reads: list[list[str]] = field(default_factory=list)
    contents: list[bytes] = field(default_factory=list)
    connections: int = 0

    async def start(self) -> ScriptedSmtp:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", self.port)
        return self

    async def stop(self) -> None:
        self._server.close()
        await self._server.wait_closed()

    def credential(self, **more: Any) -> dict[str, Any]:
        return {"host": "127.0.0.1", "port": self.port, "security": "none", **more}

    def config(self, timeout: float = 5.0) -> Any:
        from services.outbound.smtp import SmtpConfig

        return SmtpConfig(
            host="127.0.0.1",
            port=self.port,
            security="none",
            timeout=timeout,
            allowed_private_hosts="127.0.0.0/8",
        )

    @property
    def commands(self) -> list[str]:
        return [c for read in self.reads for c in read]

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.write(b"220 scripted ESMTP\r\n")
        buffer, content = b"", None  # content: None outside DATA
        try:
            while chunk := await reader.read(65536):
                buffer += chunk
                read: list[str] = []
                self.reads.append(read)
                while True:
                    if content is not None:  # in DATA: up to the lone dot
                        end = (b"\r\n" + buffer).find(b"\r\n.\r\n")
                        if end < 0:
                            break
                        line, buffer = buffer[:end], buffer[end + 3 :]
                        self.contents.append(line)
                        verb, content = ".", None
                    else:
                        end = buffer.find(b"\r\n")
                        if end < 0:
                            break
                        line, buffer = buffer[:end], buffer[end + 2 :]
                        verb = line.split(b" ", 1)[0].split(b":", 1)[0].upper().decode()
                        read.append(line.decode())
                    reply = self.answer(verb, line)
                    if reply is None and verb == "EHLO":
                        reply = (
                            b"250-scripted\r\n"
                            + (b"250-PIPELINING\r\n" if self.pipelining else b"")
                            + b"250 8BITMIME\r\n"
                        )
                    reply = _normal(verb) if reply is None else reply
                    if reply == DROP:
                        return
                    if reply == HANG:
                        while await reader.read(65536):  # until the client gives up
                            pass
                        return
                    writer.write(reply)
                    if verb == "DATA" and reply.startswith(b"354"):
                        content = b""
                    if verb == "QUIT":
                        return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            writer.close()
