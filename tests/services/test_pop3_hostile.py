"""The POP3 client against a scripted hostile server on loopback: capped lines and messages,
malformed listings refused in our words, and reading cost that grows linearly."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from services.errors import ProviderPermanentError, ProviderTemporaryError
from services.pop3.client import MAX_LINE_BYTES, Pop3Client, Pop3Config

SECRET = b"HOSTILE-WORDS-91c2"
Replies = dict[bytes, Callable[[bytes], bytes]]


class ScriptedPop3:
    """Greets, logs anyone in, and answers each command with what the test scripted."""

    def __init__(self, replies: Replies) -> None:
        self.replies = replies
        self.port = 0
        self._server: Any = None

    async def start(self) -> ScriptedPop3:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"+OK " + SECRET + b"\r\n")
        defaults: Replies = {
            b"CAPA": lambda _: b"+OK\r\nUIDL\r\nPIPELINING\r\n.\r\n",
            b"USER": lambda _: b"+OK\r\n",
            b"PASS": lambda _: b"+OK " + SECRET + b"\r\n",
            b"QUIT": lambda _: b"+OK\r\n",
        }
        try:
            while line := await reader.readline():
                verb = line.split(b" ", 1)[0].strip().upper()
                answer = self.replies.get(verb) or defaults.get(verb)
                writer.write(answer(line) if answer else b"-ERR " + SECRET + b"\r\n")
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[Replies], Any]]:
    servers: list[ScriptedPop3] = []

    async def start(replies: Replies) -> ScriptedPop3:
        server = await ScriptedPop3(replies).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


def _config(port: int, security: str = "none", **kw: Any) -> Pop3Config:
    return Pop3Config(
        host="127.0.0.1",
        port=port,
        username="ana",
        password="pw",
        security=security,
        timeout=5,
        allowed_private_hosts="127.0.0.0/8",
        **kw,
    )


def _stuffed(lines: int) -> bytes:
    """A message of `lines` short lines, every other one starting with a dot."""
    return b"".join(b"..dot %d\r\n" % i if i % 2 else b"line %d\r\n" % i for i in range(lines))


async def _failure(port: int, call: Callable[[Pop3Client], Any], **kw: Any) -> str:
    client = await Pop3Client(_config(port, **kw)).connect()
    try:
        with pytest.raises(ProviderTemporaryError) as info:
            await call(client)
    finally:
        client.abort()
    text = str(info.value)
    assert SECRET.decode() not in text and "127.0.0.1" not in text and str(port) not in text
    return text


async def test_an_over_long_listing_line_is_cut_off(scripted: Any) -> None:
    server = await scripted({b"UIDL": lambda _: b"+OK\r\n1 " + b"a" * (MAX_LINE_BYTES * 4)})

    text = await _failure(server.port, lambda c: c.uidl())

    assert text == "The POP3 server sent an over-long line during UIDL."


async def test_a_locked_maildrop_is_a_temporary_failure(scripted: Any) -> None:
    server = await scripted({b"PASS": lambda _: b"-ERR [IN-USE] " + SECRET + b"\r\n"})

    with pytest.raises(ProviderTemporaryError) as info:
        await Pop3Client(_config(server.port)).connect()

    assert str(info.value) == "The POP3 server cannot answer PASS now [IN-USE]."


async def test_data_sent_in_clear_after_stls_is_refused(scripted: Any) -> None:
    server = await scripted(
        {
            b"CAPA": lambda _: b"+OK\r\nSTLS\r\n.\r\n",
            b"STLS": lambda _: b"+OK\r\n+OK " + SECRET + b"\r\n",
        }
    )

    with pytest.raises(ProviderPermanentError) as info:
        await Pop3Client(_config(server.port, security="starttls")).connect()

    assert str(info.value) == "The POP3 server sent data after agreeing to STLS."


async def test_a_malformed_uidl_listing_is_refused(scripted: Any) -> None:
    server = await scripted({b"UIDL": lambda _: b"+OK\r\n1 " + SECRET + b" extra\r\n.\r\n"})

    text = await _failure(server.port, lambda c: c.uidl())

    assert text == "The POP3 server sent a malformed UIDL listing during UIDL."


async def test_a_message_over_the_cap_on_the_wire_is_cut_off(scripted: Any) -> None:
    cap = 64 * 1024
    # LIST may say anything: the answer itself runs on past the cap and never ends.
    server = await scripted({b"RETR": lambda _: b"+OK\r\n" + b"x" * 40 + b"\r\n" + b"y" * cap * 4})
    client = await Pop3Client(_config(server.port, max_message_bytes=cap)).connect()
    try:
        with pytest.raises(ProviderTemporaryError) as info:
            await client.retrieve([1])
        # Cut off at the cap (plus room for dot-stuffing and one read), not at the end.
        assert len(client._buf) <= cap * 2 + MAX_LINE_BYTES + 256 * 1024
    finally:
        client.abort()
    assert str(info.value) == "The POP3 server sent a message over the size limit during RETR."


async def test_pipelined_bodies_are_split_and_unstuffed_exactly(scripted: Any) -> None:
    bodies = {1: _stuffed(5), 2: b"", 3: b"\r\n", 4: b"a\r\n"}
    server = await scripted(
        {b"RETR": lambda line: b"+OK\r\n" + bodies[int(line.split()[1])] + b".\r\n"}
    )
    async with Pop3Client(_config(server.port)) as client:
        got = await client.retrieve([1, 2, 3, 4])
    assert got == [bodies[1].replace(b"..dot", b".dot"), b"", b"\r\n", b"a\r\n"]


async def test_reading_a_message_costs_linear_time(scripted: Any) -> None:
    sizes = {1: 200_000, 2: 400_000}  # lines; about 2.6 and 5.2 MB
    payload = {n: b"+OK\r\n" + _stuffed(lines) + b".\r\n" for n, lines in sizes.items()}
    server = await scripted({b"RETR": lambda line: payload[int(line.split()[1])]})

    async def ratio(client: Pop3Client) -> float:
        times: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(5):  # alternate, so a busy moment of the machine hits both sizes
            for n in (1, 2):
                start = time.perf_counter()
                [body] = await client.retrieve([n])
                times[n].append(time.perf_counter() - start)
                assert body is not None and body.count(b"\r\n") == sizes[n]
        return min(times[2]) / min(times[1])

    ratios = []
    gc.disable()  # a collection inside one timing is noise, not cost
    try:
        async with Pop3Client(_config(server.port)) as client:
            await client.retrieve([1])  # warm: buffers and the allocator
            # A shared machine can spike through a whole turn; a quadratic reader fails all.
            for _ in range(3):
                ratios.append(await ratio(client))
                if ratios[-1] <= 2.5:
                    break
    finally:
        gc.enable()

    assert min(ratios) <= 2.5, ratios


async def test_a_message_the_server_refuses_is_skipped_and_the_rest_stored(
    scripted: Any, db: Any, settings: Any
) -> None:
    import sqlalchemy as sa

    from database.models import Account, Credential, Message, Provider
    from services.crypto import encrypt_json
    from services.pop3.sync import sync_maildrop
    from tests.factories import create_tenant, create_user

    good = {1: b"Subject: one\r\n\r\nfirst\r\n", 3: b"Subject: three\r\n\r\nthird\r\n"}

    def retr(line: bytes) -> bytes:
        n = int(line.split()[1])
        return b"+OK\r\n" + good[n] + b".\r\n" if n in good else b"-ERR " + SECRET + b"\r\n"

    server = await scripted(
        {
            b"UIDL": lambda _: b"+OK\r\n1 u-1\r\n2 u-2\r\n3 u-3\r\n.\r\n",
            b"LIST": lambda _: b"+OK\r\n1 30\r\n2 30\r\n3 30\r\n.\r\n",
            b"RETR": retr,
        }
    )
    tenant = await create_tenant(db)
    owner = await create_user(db, tenant)
    config = _config(server.port)
    async with db.transaction() as s:
        account = Account(
            tenant_id=tenant.id, user_id=owner.id, provider=Provider.pop3, email="a@x.org"
        )
        s.add(account)
        await s.flush()
        secrets = {"pop3": {"host": "127.0.0.1", "port": server.port, "username": "a"}}
        s.add(
            Credential(
                tenant_id=tenant.id,
                account_id=account.id,
                ciphertext=encrypt_json(settings, {**secrets, "smtp": {}}),
            )
        )

    async with Pop3Client(config) as client:
        first = await sync_maildrop(db, account=account, client=client)
    async with Pop3Client(config) as client:
        second = await sync_maildrop(db, account=account, client=client)

    assert (first.new, second.new) == (2, 0)
    # The refused one is asked for again (and only it); the stored ones are not.
    assert client.retrieved == 1
    async with db.transaction() as s:
        stmt = sa.select(Message.provider_id, Message.subject).where(
            Message.account_id == account.id
        )
        rows = sorted((await s.execute(stmt)).all())
    assert rows == [("u-1", "one"), ("u-3", "three")]
