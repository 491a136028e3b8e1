"""PIPELINING (RFC 2920) and the transaction reader, against a raw scripted server that shows
which commands came in one read: the group is one write where it is offered and never where
it is not, partial refusals are counted right, hostile replies end in our own words, and the
send ledger stays exact when the server hangs up around a pipelined DATA."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import sqlalchemy as sa

from database.models import OutboundMessage
from database.repositories.events import rows as events_repo
from services.errors import PostroomError
from services.outbound.send import SendRequest, send_message
from services.outbound.smtp import DeliveryUnknown, SmtpConnection, SmtpRejected, SmtpTemporaryError
from services.outbound.smtp_wire import MAX_LINE, Wire, WireError
from tests.hostile.cost import assert_linear
from tests.smtp_fixtures import create_send_event, create_smtp_account
from tests.smtp_scripted import DROP, HANG, SECRET, ScriptedSmtp

S = SECRET.encode()
MESSAGE = b"Subject: hi\r\n\r\nline one\r\n.leading dot\r\n"
ENVELOPE = ["MAIL FROM:<a@example.com>", "RCPT TO:<b@example.org>", "RCPT TO:<c@example.org>"]


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[..., Any]]:
    started: list[ScriptedSmtp] = []

    async def start(**kwargs: Any) -> ScriptedSmtp:
        server = await ScriptedSmtp(**kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


async def _send(server: ScriptedSmtp, conn: SmtpConnection | None = None, **kw: Any) -> Any:
    async def go(c: SmtpConnection) -> Any:
        return await c.send(
            sender="a@example.com",
            recipients=["b@example.org", "c@example.org"],
            data=MESSAGE,
            **kw,
        )

    if conn is not None:
        return await go(conn)
    async with SmtpConnection(server.config(timeout=0.5)) as fresh:
        return await go(fresh)


async def test_the_envelope_and_data_go_out_as_one_group(scripted) -> None:
    server = await scripted()
    async with SmtpConnection(server.config()) as conn:
        first = await _send(server, conn)
        second = await _send(server, conn)
    assert conn.pipelining
    groups = [r for r in server.reads if r and r[0].startswith("MAIL")]
    assert groups == [[*ENVELOPE, "DATA"]] * 2, server.reads
    # Dot-stuffed on the wire; the content read back is the message.
    assert server.contents == [MESSAGE.replace(b"\r\n.", b"\r\n..")] * 2
    assert first.accepted == second.accepted == ["b@example.org", "c@example.org"]
    assert first.reply == "250 2.0.0 Ok: queued" and server.connections == 1


async def test_without_pipelining_each_command_waits_for_its_reply(scripted) -> None:
    server = await scripted(pipelining=False)
    async with SmtpConnection(server.config()) as conn:
        delivery = await _send(server, conn)
    assert not conn.pipelining
    assert all(len(read) <= 1 for read in server.reads), server.reads
    assert server.commands[1:] == [*ENVELOPE, "DATA", "QUIT"]
    assert delivery.accepted == ["b@example.org", "c@example.org"]
    assert len(server.contents) == 1


@pytest.mark.parametrize("pipelining", [True, False])
async def test_a_refused_recipient_in_the_group_is_left_out(scripted, pipelining: bool) -> None:
    def answer(verb: str, line: bytes) -> bytes | None:
        if verb == "RCPT" and b"<b@" in line:
            return b"550 5.1.1 <b@example.org>: " + S + b"\r\n"
        return None

    server = await scripted(answer=answer, pipelining=pipelining)
    delivery = await _send(server)
    assert delivery.accepted == ["c@example.org"]
    assert delivery.refused == {"b@example.org": f"550 5.1.1 <b@example.org>: {SECRET}"}
    assert len(server.contents) == 1


async def test_every_recipient_refused_but_data_accepted_ends_with_a_lone_dot(scripted) -> None:
    # RFC 2920 3.1: a server may accept DATA even after refusing every RCPT; the client ends
    # that with a lone dot, so nothing is delivered, and the session stays usable.
    refuse = True

    def answer(verb: str, line: bytes) -> bytes | None:
        if verb == "RCPT" and refuse:
            return b"550 5.1.1 " + S + b"\r\n"
        return None

    server = await scripted(answer=answer)
    async with SmtpConnection(server.config()) as conn:
        with pytest.raises(SmtpRejected) as info:
            await _send(server, conn)
        assert info.value.message == "The SMTP server refused every recipient (550 5.1.1)."
        assert server.contents == [b""]
        refuse = False
        await _send(server, conn)
    assert server.contents == [b"", MESSAGE.replace(b"\r\n.", b"\r\n..")]
    assert server.connections == 1


@pytest.mark.parametrize(
    ("verb", "reply", "expected"),
    [
        ("MAIL", b"451 4.3.0 " + S + b"\r\n", (SmtpTemporaryError, "451 4.3.0 to the envelope")),
        ("MAIL", b"553 5.7.1 " + S + b"\r\n", (SmtpRejected, "553 5.7.1 to the envelope")),
        ("DATA", b"554 5.5.1 " + S + b"\r\n", (SmtpRejected, "554 5.5.1 to DATA")),
        (".", b"452 4.3.1 " + S + b"\r\n", (SmtpTemporaryError, "452 4.3.1 to DATA")),
    ],
)
async def test_refusals_show_codes_only(scripted, verb, reply, expected) -> None:
    server = await scripted(answer=lambda v, line: reply if v == verb else None)
    kind, words = expected
    with pytest.raises(kind) as info:
        await _send(server)
    assert words in info.value.message and SECRET not in info.value.message
    assert len(server.contents) == (1 if verb == "." else 0)


# Hostile answers: (command answered, reply, error type, words of ours in the error).
BEFORE = SmtpTemporaryError
HOSTILE = [
    ("MAIL", S + b" no code here\r\n", BEFORE, "not an SMTP reply"),
    ("MAIL", b"250-ok\r\n251 " + S + b"\r\n", BEFORE, "not an SMTP reply"),  # codes differ
    ("MAIL", b"250 " + b"x" * (4 * MAX_LINE), BEFORE, f"longer than {MAX_LINE} bytes"),
    ("MAIL", b"250-" + S + b"\r\n" * 1 + b"250-x\r\n" * 20000, BEFORE, "reply longer than"),
    ("DATA", b"354 go on\r\n250 " + S + b"\r\n", BEFORE, "more replies than commands"),
    ("DATA", b"354 go on\r\n" + b"250 ok\r\n" * 5000, BEFORE, "more replies than commands"),
    ("DATA", DROP, BEFORE, "closed the connection"),
    ("RCPT", HANG, BEFORE, "timed out"),
    (".", S + b" garbage\r\n", DeliveryUnknown, "not an SMTP reply"),
    (".", b"250 " + b"y" * (4 * MAX_LINE), DeliveryUnknown, f"longer than {MAX_LINE} bytes"),
    (".", b"354 " + S + b"\r\n", DeliveryUnknown, "not SMTP"),
    (".", DROP, DeliveryUnknown, "closed the connection"),
    (".", HANG, DeliveryUnknown, "timed out"),
]


@pytest.mark.parametrize(("verb", "reply", "kind", "words"), HOSTILE)
async def test_hostile_replies_end_in_our_words(scripted, verb, reply, kind, words) -> None:
    server = await scripted(answer=lambda v, line: reply if v == verb else None)
    with pytest.raises(PostroomError) as info:
        await _send(server)
    assert type(info.value) is kind
    assert words in info.value.message and SECRET not in info.value.message
    # Before DATA nothing was handed over; after it, the server read the content once.
    assert len(server.contents) == (1 if kind is DeliveryUnknown else 0)


async def test_a_reply_nobody_asked_for_between_messages_opens_a_new_session(scripted) -> None:
    server = await scripted()
    async with SmtpConnection(server.config()) as conn:
        await _send(server, conn)
        # The server says something unprompted (a 421 before it goes away): not paired with
        # the next MAIL; the next message goes out on a fresh connection.
        assert conn._wire is not None
        conn._wire.buffer_updated(0)  # nothing new: still usable
        data = b"421 4.4.2 " + S + b"\r\n"
        conn._wire.get_buffer(-1)[: len(data)] = data
        conn._wire.buffer_updated(len(data))
        await _send(server, conn)
    assert server.connections == 2 and len(server.contents) == 2


# The ledger (docs/sending.md) with a pipelined DATA.

REQUEST: dict[str, Any] = dict(
    to=["bob@example.org", "carol@example.org"],
    bcc=["hidden@example.net"],
    subject="Pipelined",
    body_text="hello",
)


async def _service_send(db, settings, account, event_id) -> Any:
    async with db.transaction() as s:
        event = await events_repo.get(s, event_id)
        assert event is not None
    return await send_message(
        db,
        settings=settings,
        account=account,
        event=event,
        request=SendRequest(**REQUEST),
        nylas=None,
    )


async def _row(db, event_id) -> OutboundMessage:
    """This test's ledger row (other tests' rows stay: no test empties the table)."""
    async with db.transaction() as s:
        query = sa.select(OutboundMessage).where(OutboundMessage.event_id == event_id)
        [row] = list((await s.execute(query)).scalars())
    return row


async def test_ledger_a_drop_after_the_pipelined_content_is_never_sent_again(
    db, settings, scripted
) -> None:
    server = await scripted(answer=lambda v, line: DROP if v == "." else None)
    account = await create_smtp_account(db, settings, smtp=server.credential())
    event_id, _, _ = await create_send_event(db, account=account, kwargs={})
    for _ in range(2):
        with pytest.raises(DeliveryUnknown):
            await _service_send(db, settings, account, event_id)
        assert (await _row(db, event_id)).status == "sending"
    assert len(server.contents) == 1, "the second attempt must not transmit"
    assert next(r for r in server.reads if r and r[0].startswith("MAIL"))[-1] == "DATA"


async def test_ledger_a_drop_after_the_pipelined_data_command_sends_on_retry(
    db, settings, scripted
) -> None:
    drops = [True]

    def answer(verb: str, line: bytes) -> bytes | None:
        if verb == "DATA" and drops:
            drops.pop()
            return DROP
        return None

    server = await scripted(answer=answer)
    account = await create_smtp_account(db, settings, smtp=server.credential())
    event_id, _, _ = await create_send_event(db, account=account, kwargs={})
    with pytest.raises(SmtpTemporaryError) as info:
        await _service_send(db, settings, account, event_id)
    assert info.value.transient
    assert (await _row(db, event_id)).status == "pending" and server.contents == []
    outcome = await _service_send(db, settings, account, event_id)
    assert outcome.result["status"] == "success" and len(server.contents) == 1
    assert (await _row(db, event_id)).status == "sent"


@pytest.mark.parametrize("pipelining", [True, False])
async def test_ledger_records_only_the_recipients_taken(db, settings, scripted, pipelining) -> None:
    def answer(verb: str, line: bytes) -> bytes | None:
        if verb == "RCPT" and b"carol" in line:
            return b"550 5.1.1 <carol@example.org>: " + S + b"\r\n"
        return None

    server = await scripted(answer=answer, pipelining=pipelining)
    account = await create_smtp_account(db, settings, smtp=server.credential())
    event_id, _, _ = await create_send_event(db, account=account, kwargs={})
    outcome = await _service_send(db, settings, account, event_id)
    assert outcome.result["recipients_sent"] == 2
    row = await _row(db, event_id)
    assert row.status == "sent" and sorted(row.recipients) == [
        "bob@example.org",
        "hidden@example.net",
    ]
    envelope = [c for c in server.commands if c.startswith(("MAIL", "RCPT", "DATA"))]
    assert len(envelope) == 5 and len(server.contents) == 1
    if not pipelining:
        assert all(len(read) <= 1 for read in server.reads), server.reads


class _Loopback(asyncio.Transport):
    """Just enough transport for feeding a Wire by hand."""

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def is_closing(self) -> bool:
        return False

    def abort(self) -> None:
        pass


def _replies_read(stream: bytes, chunk: int = 7) -> int:
    """Feed `stream` to a Wire `chunk` bytes at a time (lines cut anywhere), taking the replies
    out as they complete, as reads do; how many replies were parsed."""
    wire = Wire(_Loopback())
    replies = wire._replies
    taken = 0
    for start in range(0, len(stream), chunk):
        part = stream[start : start + chunk]
        wire.get_buffer(-1)[: len(part)] = part
        wire.buffer_updated(len(part))
        taken += len(replies)
        replies.clear()
    assert wire.usable
    return taken


def _many_replies(n: int) -> bytes:
    return b"250 2.1.5 Ok\r\n" * n


def _multiline_replies(n: int) -> bytes:
    return b"250-first\r\n250-second\r\n250 last\r\n" * n


def _long_multiline(n: int) -> bytes:
    return b"250-x\r\n" * n + b"250 end\r\n"


async def test_reading_replies_costs_linear_time() -> None:
    # Cut into 7-byte reads, so most lines arrive in pieces; multi-line replies, as these keep
    # the most state between reads.
    assert_linear(_replies_read, _multiline_replies, 1_000)
    assert _replies_read(_many_replies(10)) == _replies_read(_multiline_replies(10)) == 10
    # One multi-line reply past the limit (MAX_REPLY) is refused, not accumulated.
    wire = Wire(_Loopback())
    data = _long_multiline(20_000)
    for start in range(0, len(data), 4096):
        part = data[start : start + 4096]
        wire.get_buffer(-1)[: len(part)] = part
        wire.buffer_updated(len(part))
    with pytest.raises(WireError, match="reply longer than"):
        await wire.read(1, wire.deadline(1))


@pytest.mark.parametrize("security", ["none", "starttls", "tls"])
def test_sessions_work_on_uvloop(smtp_server, security: str) -> None:
    # The API serves on uvloop (make api) and verifies accounts with SmtpConnection there;
    # uvloop's transports are not asyncio.Transport subclasses and read differently.
    import uvloop

    from services.outbound.smtp import SmtpConfig

    peer = smtp_server(security=security)
    config = SmtpConfig.from_credential(peer.credential())

    async def go() -> list[str]:
        cfg = dataclasses.replace(config, allowed_private_hosts="127.0.0.0/8")
        async with SmtpConnection(cfg) as conn:
            replies = [
                (await conn.send(sender="a@example.com", recipients=[r], data=MESSAGE)).reply
                for r in ("b@example.org", "c@example.org")
            ]
            assert conn.pipelining
        return replies

    assert uvloop.run(go()) == ["250 2.0.0 Ok: queued"] * 2
    assert [r.rcpt_tos for r in peer.received] == [["b@example.org"], ["c@example.org"]]


async def test_sessions_turn_nagle_off(scripted) -> None:
    # destination.connect_socket makes the socket; asyncio sets TCP_NODELAY only on sockets
    # created with proto IPPROTO_TCP. With Nagle on, the content waited for the ACK of the
    # envelope whenever the server delayed it.
    import socket

    server = await scripted()
    async with SmtpConnection(server.config()) as conn:
        await conn.connect()
        assert conn._wire is not None
        sock = conn._wire.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
