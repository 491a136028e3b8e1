"""services/destination.py: which addresses a mail connection may go to, the check again at
connect time (IMAP, SMTP, Sent copy) to the address that was checked, and failure texts that
never carry a foreign server's words."""

from __future__ import annotations

import ipaddress
import socket
from datetime import UTC, datetime
from typing import Any

import pytest

from services import destination
from services.destination import AllowList, MailHostNotAllowed, check_addresses
from services.errors import PostroomError, ProviderTemporaryError
from services.imap.client import ImapClient, ImapConfig
from services.outbound.sent_copy import append_sent_copy
from services.outbound.smtp import SmtpConfig, SmtpConnection
from tests import banner_server as banners
from tests.banner_server import BANNER, BannerServer, assert_no_peer_words
from tests.imap_fixtures import PASSWORD, Dovecot
from tests.peers import free_port

banner_server = banners.banner_server
LOOPBACK = "127.0.0.0/8,::1"

ADDRESSES = [
    # (address, why it is refused or None when it is public)
    ("8.8.8.8", None),
    ("1.1.1.1", None),
    ("2606:4700:4700::1111", None),
    ("2a00:1450:4001:80b::200e", None),
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("10.20.30.40", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "shared (CGNAT)"),
    ("100.127.255.254", "shared (CGNAT)"),
    ("169.254.169.254", "link-local (cloud metadata)"),
    ("192.0.0.192", "reserved"),
    ("192.0.2.1", "reserved"),
    ("198.18.0.1", "reserved"),
    ("203.0.113.9", "reserved"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("fe80::1", "link-local"),
    ("fd00:ec2::254", "private"),  # a cloud's IPv6 metadata address
    ("ff02::1", "multicast"),
    ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
    ("::ffff:169.254.169.254", "link-local (cloud metadata)"),
    ("::ffff:8.8.8.8", None),
    ("::127.0.0.1", "reserved"),  # IPv4-compatible (deprecated)
    ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
    ("64:ff9b::a9fe:a9fe", "link-local (cloud metadata)"),  # NAT64 of 169.254.169.254
    ("64:ff9b::808:808", None),  # NAT64 of 8.8.8.8
    ("64:ff9b:1::1", "reserved"),  # local-use NAT64
    ("2002:7f00:1::1", "loopback"),  # 6to4 of 127.0.0.1
    ("2002:a00:1::1", "private"),  # 6to4 of 10.0.0.1
    ("2001:db8::1", "reserved"),
    ("2001::1", "reserved"),  # Teredo
    ("100::1", "reserved"),  # discard-only
]


@pytest.mark.parametrize(("text", "reason"), ADDRESSES)
def test_address_table(text: str, reason: str | None) -> None:
    assert destination.non_public_reason(ipaddress.ip_address(text)) == reason


def test_allow_list_takes_hosts_and_networks() -> None:
    allow = AllowList.parse(" 10.0.0.0/8, mail.internal. ,[fd00::]/8,127.0.0.1 ,")
    assert allow.names == frozenset({"mail.internal"})
    ten = ipaddress.ip_address("10.1.2.3")
    assert allow.allows("anything", ten)
    assert allow.allows("x", ipaddress.ip_address("127.0.0.1"))
    assert not allow.allows("x", ipaddress.ip_address("127.0.0.2"))
    assert allow.allows("x", ipaddress.ip_address("::ffff:10.9.9.9"))  # mapped form too
    assert allow.allows("MAIL.Internal", ipaddress.ip_address("192.168.7.7"))
    assert not allow.allows("other.internal", ipaddress.ip_address("192.168.7.7"))


def test_check_refuses_any_non_public_address_and_keeps_the_checked_ones() -> None:
    none = AllowList.parse("")
    got = check_addresses("mx.example", 25, ["8.8.8.8", "2606:4700::1"], none, role="SMTP")
    assert got.addresses == ("8.8.8.8", "2606:4700::1") and got.host == "mx.example"
    # One inward answer among public ones refuses the name (no steering to the private one).
    with pytest.raises(MailHostNotAllowed) as info:
        check_addresses("mx.example", 25, ["8.8.8.8", "10.0.0.5"], none, role="SMTP")
    assert info.value.code == "mail_host_not_allowed" and info.value.status_code == 422
    assert "private" in info.value.message and "10.0.0.5" not in info.value.message
    # A mapped address is connected to as the IPv4 address it is.
    allowed = check_addresses("h", 25, ["::ffff:127.0.0.1"], AllowList.parse(LOOPBACK), role="X")
    assert allowed.addresses == ("127.0.0.1",)


@pytest.mark.parametrize("port", [0, -1, 65536, 70000])
def test_ports_outside_the_tcp_range_are_refused(port: int) -> None:
    with pytest.raises(MailHostNotAllowed):
        check_addresses("h", port, ["8.8.8.8"], AllowList.parse(""), role="IMAP")


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "2130706433",  # decimal
        "0x7f.1",  # hex, short form
        "0x7f000001",
        "017700000001",  # octal
        "127.1",
        "::ffff:127.0.0.1",
        "[::1]",
        "localhost",
        "LOCALHOST.",
        "169.254.169.254",
        "0",
        "10.0.0.1",
    ],
)
async def test_resolve_checks_what_the_resolver_answers(host: str) -> None:
    with pytest.raises(MailHostNotAllowed):
        await destination.resolve(host, 993, role="IMAP", allowed="")


async def test_resolve_allows_listed_networks_and_names() -> None:
    dest = await destination.resolve("2130706433", 25, role="SMTP", allowed=LOOPBACK)
    assert dest.addresses == ("127.0.0.1",) and dest.host == "2130706433"
    dest = await destination.resolve("localhost", 25, role="SMTP", allowed="localhost")
    assert "127.0.0.1" in dest.addresses
    with pytest.raises(MailHostNotAllowed):  # the loopback list does not open metadata
        await destination.resolve("169.254.169.254", 25, role="SMTP", allowed=LOOPBACK)
    public = await destination.resolve("8.8.8.8", 25, role="SMTP", allowed="")
    assert public.addresses == ("8.8.8.8",)


async def test_an_unresolvable_name_is_a_temporary_failure_at_connect_time() -> None:
    with pytest.raises(ProviderTemporaryError) as info:
        await destination.resolve("no-such-host.invalid", 993, role="IMAP", allowed="")
    assert "no-such-host" not in info.value.message


# -- connect time: refused before any packet, allowed ones go to the checked address ----------


class Spy:
    """Counts name lookups (the real getaddrinfo answers them)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.hosts: list[str] = []
        real = socket.getaddrinfo

        def spy(host: Any, *args: Any, **kwargs: Any) -> Any:
            self.hosts.append(str(host))
            return real(host, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", spy)


def _imap(
    port: int, allowed: str | None, host: str = "127.0.0.1", user: str = "dest@example.com"
) -> ImapConfig:
    return ImapConfig(
        host=host,
        port=port,
        username=user,
        password=PASSWORD,
        security="none",
        timeout=5,
        allowed_private_hosts=allowed,
    )


async def test_imap_connect_refuses_before_connecting(banner_server) -> None:
    peer: BannerServer = banner_server(b"* OK ready\r\n")
    for host in ("127.0.0.1", "localhost", "2130706433", "::ffff:127.0.0.1"):
        with pytest.raises(MailHostNotAllowed):
            await ImapClient(_imap(peer.port, "", host=host)).connect()
    assert peer.connections == 0


async def test_imap_connects_to_the_checked_address_with_one_lookup(
    dovecot: Dovecot, mailbox_user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Spy(monkeypatch)
    imap = _imap(dovecot.port, LOOPBACK, host="localhost", user=mailbox_user)
    async with ImapClient(imap) as client:
        boxes = await client.list_mailboxes()
    assert "INBOX" in {b.name for b in boxes}
    assert spy.hosts == ["localhost"]


async def test_smtp_connect_refuses_before_connecting(banner_server) -> None:
    peer: BannerServer = banner_server(b"220 ready\r\n")
    for host in ("127.0.0.1", "localhost", "0x7f.1"):
        config = SmtpConfig(host=host, port=peer.port, security="none", allowed_private_hosts="")
        with pytest.raises(MailHostNotAllowed):
            await SmtpConnection(config).connect()
    assert peer.connections == 0


async def test_smtp_connects_to_the_checked_address_with_one_lookup(
    banner_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    peer: BannerServer = banner_server(b"220 mx ESMTP\r\n", [b"250 mx\r\n", b"221 bye\r\n"])
    spy = Spy(monkeypatch)
    config = SmtpConfig(
        host="localhost", port=peer.port, security="none", timeout=5, allowed_private_hosts=LOOPBACK
    )
    async with SmtpConnection(config) as conn:
        await conn.connect()
    assert spy.hosts == ["localhost"] and peer.connections == 1
    assert peer.received[0].startswith(b"EHLO")


async def test_sent_copy_refuses_before_connecting(banner_server) -> None:
    peer: BannerServer = banner_server(b"* OK ready\r\n")
    imap = {"host": "localhost", "port": peer.port, "security": "none"}
    imap.update(username="u", password="p")
    with pytest.raises(MailHostNotAllowed):
        await append_sent_copy(
            imap, folder=None, data=b"x", when=datetime.now(UTC), allowed_private_hosts=""
        )
    assert peer.connections == 0


async def test_sent_copy_appends_through_the_checked_address(
    dovecot: Dovecot, mailbox_user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Spy(monkeypatch)
    imap = dovecot.credentials(mailbox_user)["imap"]
    assert isinstance(imap, dict)
    appended = await append_sent_copy(
        {**imap, "host": "localhost"},
        folder=None,
        data=b"From: a@example.com\r\nSubject: copy\r\n\r\nbody\r\n",
        when=datetime.now(UTC),
        allowed_private_hosts=LOOPBACK,
    )
    assert appended.folder and appended.uid is not None
    assert spy.hosts == ["localhost"]


# -- what a tenant reads of a failure -------------------------------------------------------

B = BANNER.encode()
IMAP_PEERS = [
    (b"+OK " + B + b" POP3 ready\r\n", []),  # not IMAP at all
    (b"SSH-2.0-OpenSSH_" + B + b"\r\n", []),
    (b"* OK " + B + b"\r\n", [b"{tag} NO " + B + b" refused\r\n"]),  # CAPABILITY refused
    (b"* OK " + B + b"\r\n", [b"* " + B + b" garbage\r\n"]),  # then hangs up
    (b"* BYE " + B + b"\r\n", []),
    (b"", []),  # accepts and hangs up at once
]


@pytest.mark.parametrize(("greeting", "replies"), IMAP_PEERS)
async def test_imap_failures_never_carry_the_peers_words(
    banner_server, greeting: bytes, replies: list[bytes]
) -> None:
    peer: BannerServer = banner_server(greeting, replies)
    with pytest.raises(PostroomError) as info:
        await ImapClient(_imap(peer.port, LOOPBACK)).connect()
    assert_no_peer_words(info.value.message, peer.port)


SMTP_PEERS = [
    (b"554 " + B + b" go away\r\n", []),  # refused greeting
    (b"SSH-2.0-OpenSSH_" + B + b"\r\n", []),  # not SMTP
    (b"-ERR " + B + b" unknown command\r\n", []),  # a Redis
    (b"220 " + B + b" ESMTP\r\n", [B + b" garbage\r\n"]),  # EHLO answered with junk
    (b"220 " + B + b" ESMTP\r\n", [b"500 " + B + b"\r\n", b"550 " + B + b"\r\n"]),
    (b"220 " + B + b" ESMTP\r\n", []),  # hangs up after the banner
]


@pytest.mark.parametrize(("greeting", "replies"), SMTP_PEERS)
async def test_smtp_failures_never_carry_the_peers_words(
    banner_server, greeting: bytes, replies: list[bytes]
) -> None:
    peer: BannerServer = banner_server(greeting, replies)
    config = SmtpConfig(
        host="127.0.0.1", port=peer.port, security="none", timeout=3, allowed_private_hosts=LOOPBACK
    )
    with pytest.raises(PostroomError) as info:
        await SmtpConnection(config).connect()
    assert_no_peer_words(info.value.message, peer.port)


@pytest.mark.parametrize(("greeting", "replies"), IMAP_PEERS)
async def test_sent_copy_failures_never_carry_the_peers_words(
    banner_server, greeting: bytes, replies: list[bytes]
) -> None:
    peer: BannerServer = banner_server(greeting, replies)
    imap = {"host": "127.0.0.1", "port": peer.port, "security": "none"}
    imap.update(username="u", password="p")
    with pytest.raises(PostroomError) as info:
        await append_sent_copy(
            imap, folder=None, data=b"x", when=datetime.now(UTC), allowed_private_hosts=LOOPBACK
        )
    assert_no_peer_words(info.value.message, peer.port)


async def test_a_closed_port_is_named_connection_refused() -> None:
    port = free_port()
    with pytest.raises(ProviderTemporaryError) as info:
        await ImapClient(_imap(port, LOOPBACK)).connect()
    assert info.value.message == "Could not connect to the IMAP server: connection refused."
    config = SmtpConfig(
        host="127.0.0.1", port=port, security="none", allowed_private_hosts=LOOPBACK
    )
    with pytest.raises(PostroomError) as smtp_info:
        await SmtpConnection(config).connect()
    assert smtp_info.value.message == "Could not connect to the SMTP server: connection refused."


async def test_tls_failures_are_named_without_detail(smtp_server) -> None:
    # A certificate nobody trusts (no ca_pem given): named, and nothing of the certificate.
    for security in ("tls", "starttls"):
        peer = smtp_server(security=security)
        config = SmtpConfig(
            host="127.0.0.1", port=peer.port, security=security, allowed_private_hosts=LOOPBACK
        )
        with pytest.raises(PostroomError) as info:
            await SmtpConnection(config).connect()
        assert info.value.message == (
            "Could not open an SMTP session: the TLS certificate was not accepted."
        )
        assert info.value.transient
    # STARTTLS asked for and not offered: permanent, retrying cannot help.
    plain = smtp_server(security="none")
    config = SmtpConfig(
        host="127.0.0.1", port=plain.port, security="starttls", allowed_private_hosts=LOOPBACK
    )
    with pytest.raises(PostroomError) as refused:
        await SmtpConnection(config).connect()
    assert refused.value.message == "The SMTP server does not offer STARTTLS."
    assert not refused.value.transient


def test_the_allow_list_opens_mapped_forms_but_not_nat64_or_6to4_ones() -> None:
    allow = AllowList.parse(LOOPBACK)
    assert allow.allows("h", ipaddress.ip_address("::ffff:127.0.0.1"))
    assert not allow.allows("h", ipaddress.ip_address("64:ff9b::7f00:1"))
    assert not allow.allows("h", ipaddress.ip_address("2002:7f00:1::1"))
