"""Where IMAP and SMTP connections may go: the one check every mail connection passes.

A tenant chooses the host and port of its mail servers, so without a check the worker would
connect wherever it is told: to a Redis on loopback, a cloud metadata service, a private
network. `resolve` turns a host into the addresses it stands for and refuses any that is not
a public unicast address, unless POSTROOM_ALLOWED_PRIVATE_MAIL_HOSTS lists it; the connect
helpers below then connect to exactly those checked addresses (never resolving the name a
second time, which a DNS answer with a short TTL could point elsewhere), while the name
itself stays the TLS server name for SNI and the certificate check.

Numeric forms are covered because the resolver's answer is what is checked: "2130706433",
"0x7f.1" and "017700000001" all come back as 127.0.0.1, "::ffff:127.0.0.1" as a mapped
address whose IPv4 part is checked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from services.errors import ProviderTemporaryError, ValidationFailed
from settings import get_settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
RESOLVE_TIMEOUT_S = 10.0

# IANA special-purpose registries (RFC 6890 and successors): nothing here is a mail server
# on the public internet.
_V4_BLOCKED: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"),
    ("192.0.2.0/24", "reserved"),
    ("192.88.99.0/24", "reserved"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "reserved"),
    ("198.51.100.0/24", "reserved"),
    ("203.0.113.0/24", "reserved"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
)
# Global unicast IPv6 is 2000::/3; inside it these are not reachable mail servers either.
_V6_GLOBAL = ipaddress.IPv6Network("2000::/3")
_V6_BLOCKED: tuple[tuple[str, str], ...] = (
    ("2001::/23", "reserved"),  # Teredo, ORCHID, benchmarking and other protocol blocks
    ("2001:db8::/32", "reserved"),
    ("3fff::/20", "reserved"),
)
_V6_NAMED: tuple[tuple[str, str], ...] = (
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fc00::/7", "private"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
)
_V4 = [(ipaddress.IPv4Network(n), why) for n, why in _V4_BLOCKED]
_V6 = [(ipaddress.IPv6Network(n), why) for n, why in _V6_BLOCKED]
_V6_NAMES = [(ipaddress.IPv6Network(n), why) for n, why in _V6_NAMED]
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class MailHostNotAllowed(ValidationFailed):
    """The mail server's host is not a public address and is not on the allow list."""

    code = "mail_host_not_allowed"


class RelayNotAllowed(ValidationFailed):
    """SMTP without credentials to port 25 of a host the operator has not named as a relay."""

    code = "smtp_relay_not_allowed"


# Port 25 without AUTH is delivery to whoever the host is (an MX, or an open relay): mail sent
# there from our addresses in a tenant's name is spam we sent.
RELAY_PORT = 25


@dataclass(frozen=True)
class AllowList:
    """POSTROOM_ALLOWED_PRIVATE_MAIL_HOSTS, parsed: host names and networks."""

    names: frozenset[str]
    networks: tuple[Network, ...]

    @classmethod
    def parse(cls, raw: str | None) -> AllowList:
        names: set[str] = set()
        networks: list[Network] = []
        for item in (raw or "").split(","):
            entry = item.strip()
            if not entry:
                continue
            try:
                bare = entry.replace("[", "").replace("]", "")  # "[::1]" or "[fd00::]/8"
                networks.append(ipaddress.ip_network(bare, strict=False))
            except ValueError:
                names.add(_normal_name(entry))
        return cls(frozenset(names), tuple(networks))

    def allows(self, host: str, address: IPAddress) -> bool:
        if _normal_name(host) in self.names:
            return True
        candidates = [address]
        # A mapped address is the IPv4 address itself; NAT64 and 6to4 forms go through a
        # gateway somewhere else, so only their own IPv6 address can be listed.
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        return any(a in n for a in candidates for n in self.networks if a.version == n.version)


@dataclass(frozen=True)
class Destination:
    """A checked host: connect to `addresses` (in order), name the server `host` for TLS."""

    host: str
    port: int
    addresses: tuple[str, ...]


def _normal_name(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped, NAT64 (64:ff9b::/96) or 6to4 IPv6 address."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def non_public_reason(address: IPAddress) -> str | None:
    """Why `address` is not a public unicast address ("loopback", ...), or None when it is."""
    if isinstance(address, ipaddress.IPv4Address):
        return next((why for net, why in _V4 if address in net), None)
    for net, why in _V6_NAMES:
        if address in net:
            return why
    inner = embedded_ipv4(address)
    if inner is not None:
        return non_public_reason(inner)
    if address in _IPV4_COMPATIBLE:
        return "reserved"  # deprecated IPv4-compatible form (RFC 4291 2.5.5.1)
    if address not in _V6_GLOBAL:
        return "reserved"  # 64:ff9b:1::/48, 100::/64 and everything not yet allocated
    return next((why for net, why in _V6 if address in net), None)


def check_addresses(
    host: str, port: int, addresses: Iterable[str], allow: AllowList, *, role: str
) -> Destination:
    """The destination when every address is public or allowed; else MailHostNotAllowed.

    One refused address refuses the host: a name that answers with a public and a private
    address could otherwise be steered to the private one.
    """
    _check_port(port, role)
    checked: list[str] = []
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        reason = non_public_reason(address)
        if reason is not None and not allow.allows(host, address):
            raise MailHostNotAllowed(
                f"The {role} host is not allowed: it resolves to a non-public address "
                f"({reason}); mail servers must have public addresses unless the operator "
                "allows more (POSTROOM_ALLOWED_PRIVATE_MAIL_HOSTS)."
            )
        # A mapped address is connected to as the IPv4 address it is.
        inner = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        normal = str(inner or address)
        if normal not in checked:
            checked.append(normal)
    if not checked:
        raise ProviderTemporaryError(f"The {role} host name did not resolve to any address.")
    return Destination(host=_normal_name(host), port=port, addresses=tuple(checked))


def _check_port(port: int, role: str) -> None:
    # Any port of a public host is allowed (submission runs on 25, 465, 587 and others).
    if not 0 < port < 65536:
        raise MailHostNotAllowed(f"The {role} port must be between 1 and 65535.")


def _allow_list(allowed: str | None) -> AllowList:
    if allowed is None:  # the process's own settings (the worker's environment)
        allowed = get_settings().allowed_private_mail_hosts
    return AllowList.parse(allowed)


def _addresses(infos: Iterable[tuple[Any, ...]]) -> list[str]:
    return [str(info[4][0]) for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]


async def resolve(host: str, port: int, *, role: str, allowed: str | None = None) -> Destination:
    """Resolve `host` (the loop's getaddrinfo, in a thread) and check every address."""
    allow = _allow_list(allowed)
    _check_port(port, role)
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(_normal_name(host), port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S
        )
    except (OSError, UnicodeError, TimeoutError):
        raise ProviderTemporaryError(f"The {role} host name could not be resolved.") from None
    return check_addresses(host, port, _addresses(infos), allow, role=role)


async def check_configured_host(host: str, port: int, *, role: str, allowed: str) -> None:
    """The check made when an account is created or changed (422 MailHostNotAllowed).

    A name that does not resolve yet is accepted: its mail server may not be set up, and the
    worker checks again, against the address it connects to, before every connection.
    """
    try:
        await resolve(host, port, role=role, allowed=allowed)
    except ProviderTemporaryError:
        return


def failure_kind(exc: BaseException) -> str:
    """What went wrong with a connection, in words: never the peer's text or the address.

    Libraries wrap the socket's error (aiosmtplib's SMTPConnectError around an SSLError): the
    innermost cause is the one that says what happened.
    """
    for _ in range(4):
        inner = exc.__cause__ or exc.__context__
        if inner is None:
            break
        exc = inner
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "the TLS certificate was not accepted"
    if isinstance(exc, ssl.SSLError):
        return "TLS failed"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return "the connection was reset"
    if isinstance(exc, OSError) and exc.errno in (101, 113):  # ENETUNREACH, EHOSTUNREACH
        return "the host is unreachable"
    return "the connection failed"


async def connect_socket(dest: Destination, timeout: float) -> socket.socket:  # noqa: ASYNC109
    """A connected, non-blocking TCP socket to the first checked address that answers.

    `timeout` applies to each address in turn, as a resolver-driven connect would.
    """
    loop = asyncio.get_running_loop()
    last: BaseException = TimeoutError()
    for address in dest.addresses:
        # proto IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets that
        # say so. With Nagle on, a small write waits for the ACK of the previous one, and the
        # peer's delayed ACK stalled SMTP sessions (bench_smtp).
        sock = socket.socket(_family(address), socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (address, dest.port)), timeout)
            return sock
        except (OSError, TimeoutError) as exc:
            sock.close()
            last = exc
    raise last


async def open_stream(
    dest: Destination,
    timeout: float,  # noqa: ASYNC109
    *,
    tls: ssl.SSLContext | None,
    limit: int = 2**16,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Streams over `connect_socket`, with TLS from the first byte when `tls` is given (the
    checked name is the TLS server name). The IMAP and POP3 clients open through this."""
    sock = await connect_socket(dest, timeout)
    try:
        return await asyncio.wait_for(
            asyncio.open_connection(
                sock=sock,
                limit=limit,
                ssl=tls,
                server_hostname=dest.host if tls is not None else None,
            ),
            timeout,
        )
    except BaseException:
        sock.close()
        raise


def tls_context(*, verify: bool) -> ssl.SSLContext:
    """The TLS context of a mail connection; `verify=False` only where an account says so."""
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def check_relay(
    host: str, port: int, addresses: Iterable[str], *, authenticated: bool, allowed: str | None
) -> None:
    """Refuse SMTP without credentials to port 25 unless POSTROOM_ALLOWED_RELAY_HOSTS names the
    host or holds every one of its addresses (RelayNotAllowed, 422 / a permanent failure)."""
    if authenticated or port != RELAY_PORT:
        return
    allow = AllowList.parse(get_settings().allowed_relay_hosts if allowed is None else allowed)
    found = [ipaddress.ip_address(a.split("%", 1)[0]) for a in addresses]
    literal = _literal(host)
    if literal is not None:
        found.append(literal)
    if _normal_name(host) in allow.names or (found and all(allow.allows(host, a) for a in found)):
        return
    raise RelayNotAllowed(
        "SMTP without a username and password to port 25 is refused: that would send mail "
        "through whatever server the host is. Give SMTP credentials, or ask the operator to "
        "allow this relay (POSTROOM_ALLOWED_RELAY_HOSTS)."
    )


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(_normal_name(host))
    except ValueError:
        return None


async def check_configured_relay(
    host: str, port: int, *, authenticated: bool, allowed: str
) -> None:
    """check_relay at account time: resolved when it can be, by name alone when not."""
    if authenticated or port != RELAY_PORT:
        return
    addresses: list[str] = []
    try:
        infos = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(
                _normal_name(host), port, type=socket.SOCK_STREAM
            ),
            RESOLVE_TIMEOUT_S,
        )
        addresses = _addresses(infos)
    except (OSError, UnicodeError, TimeoutError):
        pass
    check_relay(host, port, addresses, authenticated=False, allowed=allowed)
