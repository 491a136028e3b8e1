"""SMTP submission: security none | starttls | tls, AUTH, one connection reused for a batch,
PIPELINING where offered, and failures sorted into what the retry policy and the send ledger
need. aiosmtplib opens the session; `services.outbound.smtp_wire` carries the transactions.

The one step whose outcome can be unknown is the DATA transfer: once the message content
has been written, a dropped connection or a timeout leaves us not knowing whether the server
queued it. That is reported as `DeliveryUnknown`, never as something to retry.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import aiosmtplib

from services import destination
from services.errors import BadCredentials, ProviderPermanentError, ValidationFailed
from services.oauth.sasl import TokenSource
from services.outbound.smtp_errors import (
    DeliveryUnknown,
    SmtpAuthUnavailable,
    SmtpRejected,
    SmtpTemporaryError,
    all_refused,
    broken,
    from_response,
    refusal,
    why,
)
from services.outbound.smtp_oauth import bearer_login
from services.outbound.smtp_wire import Reply, Wire, WireError, dot_stuffed, envelope_path

# The errors live in smtp_errors; callers import them from here, with the connection.
__all__ = [
    "Delivery",
    "DeliveryUnknown",
    "SmtpAuthUnavailable",
    "SmtpConfig",
    "SmtpConnection",
    "SmtpRejected",
    "SmtpTemporaryError",
]

SECURITY_MODES = ("none", "starttls", "tls")


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    security: str = "starttls"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 30.0
    # A private CA (PEM) to trust, e.g. a company relay's self-signed certificate.
    ca_pem: str | None = None
    verify: bool = True
    # POSTROOM_ALLOWED_PRIVATE_MAIL_HOSTS; None reads it from the process settings.
    allowed_private_hosts: str | None = None
    # An OAuth2 grant's tokens (AUTH XOAUTH2) instead of a password.
    oauth: TokenSource | None = field(default=None, repr=False, compare=False)
    # POSTROOM_ALLOWED_RELAY_HOSTS (port 25 without AUTH); None reads the process settings.
    allowed_relay_hosts: str | None = None

    @classmethod
    def from_credential(cls, smtp: Any) -> SmtpConfig:
        """The `smtp` part of an account's decrypted credential."""
        if not isinstance(smtp, dict) or not smtp.get("host") or not smtp.get("port"):
            raise BadCredentials("The account has no usable SMTP settings.")
        security = str(smtp.get("security") or "starttls").lower()
        if security not in SECURITY_MODES:
            raise BadCredentials("The account's SMTP security mode is not none, starttls or tls.")
        oauth = smtp.get("oauth")
        if oauth is None and bool(smtp.get("username")) != bool(smtp.get("password")):
            raise BadCredentials("The account's SMTP settings have a username or a password alone.")
        if oauth is not None and not smtp.get("username"):
            # Without a user the session would go out unauthenticated, not with the grant.
            raise BadCredentials("The account's OAuth2 SMTP settings have no username.")
        return cls(
            host=str(smtp["host"]),
            port=int(smtp["port"]),
            security=security,
            username=smtp.get("username") or None,
            password=smtp.get("password") or None,
            timeout=float(smtp.get("timeout") or 30.0),
            ca_pem=smtp.get("ca_pem") or None,
            verify=bool(smtp.get("verify", True)),
            oauth=oauth,
        )

    def tls_context(self) -> ssl.SSLContext:
        ctx = (
            ssl.create_default_context(cadata=self.ca_pem)
            if self.ca_pem
            else ssl.create_default_context()
        )
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


# An ENVID we send is our ledger id: letters, digits and `-` need no xtext encoding.
_XTEXT_SAFE = re.compile(r"[A-Za-z0-9-]{1,100}")


@dataclass
class Delivery:
    reply: str
    accepted: list[str]
    refused: dict[str, str]


class SmtpConnection:
    """One SMTP session, opened on first use and reused for every message of a batch.

    aiosmtplib opens it (connect, EHLO, STARTTLS, AUTH); then `smtp_wire.Wire` takes over the
    transport for the transactions, which go out as one PIPELINING group (RFC 2920) when the
    server offers it: MAIL, every RCPT and DATA in one write, two round trips per message
    instead of three plus one per recipient. A server that does not offer it gets the same
    commands one at a time.
    """

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._wire: Wire | None = None
        self.pipelining = False
        # The server offers DSN (RFC 3461): MAIL FROM may carry ENVID, which its reports
        # return as Original-Envelope-Id (services/reports links a report to its send by it).
        self.dsn = False

    async def __aenter__(self) -> SmtpConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        cfg = self.config
        # Checked at every connection; the socket goes to the address that was checked and the
        # name stays the TLS server name.
        dest = await destination.resolve(
            cfg.host, cfg.port, role="SMTP", allowed=cfg.allowed_private_hosts
        )
        destination.check_relay(
            cfg.host,
            cfg.port,
            dest.addresses,
            authenticated=cfg.username is not None,
            allowed=cfg.allowed_relay_hosts,
        )
        try:
            sock = await destination.connect_socket(dest, cfg.timeout)
        except (OSError, TimeoutError) as exc:
            raise broken(exc, "Could not connect to the SMTP server") from None
        client = aiosmtplib.SMTP(
            hostname=dest.host,
            sock=sock,
            timeout=cfg.timeout,
            use_tls=cfg.security == "tls",
            # STARTTLS is done below, on request only (aiosmtplib would otherwise upgrade
            # whenever offered, and fail vaguely when it is not).
            start_tls=False,
            tls_context=cfg.tls_context() if cfg.security != "none" else None,
        )
        stage = "the connection"
        try:
            await client.connect()
            stage = "EHLO"
            await self._greet(client)
            if cfg.security == "starttls":
                stage = "STARTTLS"
                if not client.supports_extension("starttls"):
                    raise ProviderPermanentError("The SMTP server does not offer STARTTLS.")
                await client.starttls()
                stage = "EHLO"
                await self._greet(client)
            stage = "AUTH"
            await self._authenticate(client)
            # (uvloop's transports do not subclass asyncio.Transport: no isinstance here.)
            transport = client.protocol.transport if client.protocol is not None else None
            if transport is None or transport.is_closing():
                raise aiosmtplib.SMTPServerDisconnected("gone after AUTH")
        except BaseException as exc:
            client.close()
            sock.close()  # the transport's socket, or ours if no transport was made
            if isinstance(exc, aiosmtplib.SMTPResponseException):
                raise from_response(exc, stage) from None
            if isinstance(exc, (aiosmtplib.SMTPException, OSError, TimeoutError)):
                raise broken(exc, "Could not open an SMTP session") from None
            raise
        # The EHLO answer that counts is the last one (after STARTTLS, RFC 3207).
        self.pipelining = client.supports_extension("pipelining")
        self.dsn = client.supports_extension("dsn")
        self._wire = Wire(cast(asyncio.Transport, transport))  # aiosmtplib's part ends here

    async def _greet(self, client: aiosmtplib.SMTP) -> None:
        # Greet now (plain sessions skip it in connect): a late EHLO would reset a transaction.
        try:
            await client.ehlo()
        except aiosmtplib.SMTPHeloError:
            await client.helo()

    async def _authenticate(self, client: aiosmtplib.SMTP) -> None:
        """AUTH when the account has credentials; none at all when it has none (a relay)."""
        cfg = self.config
        if cfg.username is None or (cfg.password is None and cfg.oauth is None):
            return
        if not client.supports_extension("auth"):
            # Sending without AUTH would look like success to a relay that accepts anyone, and
            # put the mail out under another identity than the one configured.
            raise SmtpAuthUnavailable(
                "The SMTP server does not offer AUTH, but the account has SMTP credentials; "
                "refusing to send them unauthenticated."
            )
        if cfg.oauth is not None:
            await bearer_login(client, cfg.username, cfg.oauth)
            return
        assert cfg.password is not None
        try:
            await client.login(cfg.username, cfg.password)
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise BadCredentials(f"The SMTP server refused the login ({exc.code}).") from None
        except aiosmtplib.SMTPResponseException:
            raise
        except aiosmtplib.SMTPException as exc:
            if isinstance(exc, (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError)):
                raise
            raise SmtpAuthUnavailable(
                "The SMTP server offers no AUTH mechanism postroom supports "
                "(PLAIN, LOGIN or CRAM-MD5); refusing to send unauthenticated."
            ) from None

    def _deadline(self, wire: Wire, size: int = 0) -> float:
        # One deadline per step (Wire keeps a single timer for them). Slow links get time in
        # proportion to the message: at least 64 KiB/s.
        return wire.deadline(self.config.timeout + size / 65536)

    async def close(self) -> None:
        wire, self._wire = self._wire, None
        if wire is None:
            return
        if wire.usable:
            try:
                wire.write(b"QUIT\r\n")
                await wire.read(1, self._deadline(wire))
            except (WireError, OSError):
                pass
        wire.close()

    def _drop(self) -> None:
        """Give up the session at once (broken, or left in a state no command can undo)."""
        wire, self._wire = self._wire, None
        if wire is not None:
            wire.abort()

    async def _reset(self) -> None:
        """Forget a half-done transaction so the session can carry the next message."""
        wire = self._wire
        if wire is None or not wire.usable:
            await self.close()
            return
        try:
            wire.write(b"RSET\r\n")
            [reply] = await wire.read(1, self._deadline(wire))
            if reply.code == 250:
                return
        except (WireError, OSError):
            pass
        self._drop()

    async def _envelope(self, wire: Wire, commands: list[bytes]) -> list[Reply]:
        """Replies to MAIL, each RCPT and (when any RCPT may have been taken) DATA."""
        deadline = self._deadline(wire)
        if self.pipelining:
            wire.write(b"".join(commands) + b"DATA\r\n")
            return await wire.read(len(commands) + 1, deadline)
        replies: list[Reply] = []
        for command in commands:
            wire.write(command)
            replies += await wire.read(1, deadline)
            if replies[0].code != 250:
                return replies  # no RCPT without a sender
        if any(r.code in (250, 251) for r in replies[1:]):
            wire.write(b"DATA\r\n")
            replies += await wire.read(1, deadline)
        return replies

    async def send(
        self,
        *,
        sender: str,
        recipients: list[str],
        data: bytes,
        before_data: Callable[[], Awaitable[None]] | None = None,
        envelope_id: str | None = None,
    ) -> Delivery:
        """MAIL, RCPT for each recipient, DATA, `before_data()` once the server is ready for the
        content (354), then the content; the server's final answer.

        Nothing of the message has been handed over until the content is written, so every
        failure before that is a definite non-delivery; a failure after it is `DeliveryUnknown`.
        """
        if not recipients:
            raise ValidationFailed("A message needs at least one recipient.")
        # MAIL and RCPT as plain commands: the addresses were checked when the message was
        # composed; _path only refuses what could break the command line.
        path = envelope_path(sender)
        rcpts = [b"RCPT TO:" + envelope_path(r) + b"\r\n" for r in recipients]
        if self._wire is None or not self._wire.usable:
            # A session the server ended or broke since the last message (an unsolicited 421).
            await self.close()
            await self.connect()
        envid = b""  # what the server offers is known once connected
        if envelope_id and self.dsn and _XTEXT_SAFE.fullmatch(envelope_id):
            envid = b" ENVID=" + envelope_id.encode()
        commands = [b"MAIL FROM:" + path + envid + b"\r\n", *rcpts]
        wire = self._wire
        assert wire is not None
        try:
            replies = await self._envelope(wire, commands)
        except (WireError, OSError) as exc:
            self._drop()
            raise SmtpTemporaryError(f"The SMTP session broke before DATA: {why(exc)}.") from None
        if wire.surplus:
            # Paired with the wrong commands, these replies could pass for the answer to
            # content the server never took: this session cannot be trusted.
            self._drop()
            raise SmtpTemporaryError(
                "The SMTP session broke before DATA: the server sent more replies than commands."
            )
        mail, n = replies[0], len(recipients)
        ready = replies[n + 1] if len(replies) > n + 1 else None  # the answer to DATA
        if ready is not None and ready.code == 354 and mail.code != 250:
            # A server in DATA mode without a transaction: nothing sane to send it.
            self._drop()
            raise refusal(mail, "the envelope")
        if mail.code != 250:
            await self._reset()
            raise refusal(mail, "the envelope")
        answers = replies[1 : n + 1]
        refused = {
            r: str(a) for r, a in zip(recipients, answers, strict=True) if a.code not in (250, 251)
        }
        accepted = [r for r in recipients if r not in refused]
        if not accepted:
            await self._abandon(ready)
            raise all_refused(answers)
        assert ready is not None  # DATA was sent, as a recipient was accepted
        if ready.code != 354:
            await self._reset()
            raise refusal(ready, "DATA")
        if before_data is not None:
            try:
                await before_data()
            except BaseException:
                self._drop()  # content never started: the server discards the transaction
                raise
        return await self._content(wire, data, accepted, refused)

    async def _abandon(self, ready: Reply | None) -> None:
        """End a transaction whose every recipient was refused."""
        if ready is None or ready.code != 354:
            await self._reset()
            return
        # RFC 2920 3.1: DATA was accepted anyway; a lone dot ends it, with nobody to deliver to.
        wire = self._wire
        if wire is None:
            return
        try:
            wire.write(b".\r\n")
            await wire.read(1, self._deadline(wire))
        except (WireError, OSError):
            self._drop()

    async def _content(
        self, wire: Wire, data: bytes, accepted: list[str], refused: dict[str, str]
    ) -> Delivery:
        try:
            wire.write(dot_stuffed(data))
        except (WireError, OSError) as exc:
            # write() refuses before writing anything on a session already gone.
            self._drop()
            raise SmtpTemporaryError(
                f"The SMTP session broke before the message was sent: {why(exc)}."
            ) from None
        try:
            [final] = await wire.read(1, self._deadline(wire, len(data)))
        except (WireError, OSError) as exc:
            self._drop()
            raise DeliveryUnknown(
                f"The connection to the SMTP server failed during DATA ({why(exc)}); "
                "the server may or may not have accepted the message."
            ) from None
        if 200 <= final.code < 300:
            return Delivery(reply=str(final), accepted=accepted, refused=refused)
        if 400 <= final.code < 600:
            # An explicit refusal of the content: the server did not take the message.
            raise refusal(final, "DATA")
        self._drop()
        raise DeliveryUnknown(
            "The SMTP server answered the message with a reply that is not SMTP; "
            "it may or may not have accepted the message."
        )
