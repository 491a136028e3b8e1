"""ENVID (RFC 3461): a server that offers DSN gets the send's ledger id in MAIL FROM, which
its reports return as Original-Envelope-Id (services/reports links them by it); a server that
does not is sent the plain command it understands."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.outbound.smtp import SmtpConnection
from tests.smtp_scripted import ScriptedSmtp


def _ehlo(dsn: bool) -> Any:
    def answer(verb: str, line: bytes) -> bytes | None:
        if verb == "EHLO":
            return (
                b"250-scripted\r\n250-PIPELINING\r\n"
                + (b"250-DSN\r\n" if dsn else b"")
                + (b"250 8BITMIME\r\n")
            )
        return None

    return answer


@pytest.fixture
async def server() -> AsyncIterator[Any]:
    started: list[ScriptedSmtp] = []

    async def start(dsn: bool) -> ScriptedSmtp:
        s = await ScriptedSmtp(answer=_ehlo(dsn)).start()
        started.append(s)
        return s

    yield start
    for s in started:
        await s.stop()


@pytest.mark.parametrize("dsn", [True, False])
async def test_envid_goes_only_to_a_server_that_offers_dsn(server, dsn: bool) -> None:
    peer = await server(dsn)
    async with SmtpConnection(peer.config()) as conn:
        await conn.send(
            sender="a@example.com",
            recipients=["b@example.org"],
            data=b"Subject: x\r\n\r\nbody\r\n",
            envelope_id="0b8f4a8e-3c1e-4d5e-9a53-2f7f0c3c9a11",
        )
        # Anything that would need xtext encoding is not sent at all.
        await conn.send(
            sender="a@example.com",
            recipients=["b@example.org"],
            data=b"Subject: x\r\n\r\nbody\r\n",
            envelope_id="a+b=c",
        )
    mails = [c for c in peer.commands if c.startswith("MAIL")]
    first = "MAIL FROM:<a@example.com>" + (
        " ENVID=0b8f4a8e-3c1e-4d5e-9a53-2f7f0c3c9a11" if dsn else ""
    )
    assert mails == [first, "MAIL FROM:<a@example.com>"]
