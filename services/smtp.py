"""SMTP submission through aiosmtplib: security none | starttls | tls, AUTH, one connection
reused for a batch, and failures sorted into what the retry policy and the send ledger need.

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
from typing import Any

import aiosmtplib

from services import destination
from services.errors import (
    BadCredentials,
    PostroomError,
    ProviderPermanentError,
    TransientError,
    ValidationFailed,
)

SECURITY_MODES = ("none", "starttls", "tls")
# RFC 3463 enhanced status code at the start of a reply's text ("5.7.1 ...").
_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})(?:\s|$)")


class SmtpTemporaryError(TransientError):
    """The SMTP server failed temporarily (4xx, connection trouble): retry later."""

    code = "smtp_temporary_error"


class SmtpRejected(ProviderPermanentError):
    """The SMTP server refused the message for good (5xx)."""

    code = "smtp_rejected"

    def __init__(self, message: str, *, smtp_code: int | None = None, reply: str = "") -> None:
        super().__init__(message)
        self.smtp_code = smtp_code
        self.reply = reply


class SmtpAuthUnavailable(ProviderPermanentError):
    """The account has SMTP credentials but the server offers no AUTH to use them with."""

    code = "smtp_auth_unavailable"


class DeliveryUnknown(PostroomError):
    """The message content reached the server but its final answer did not reach us."""

    status_code = 502
    code = "delivery_unknown"


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

    @classmethod
    def from_credential(cls, smtp: Any) -> SmtpConfig:
        """The `smtp` part of an account's decrypted credential."""
        if not isinstance(smtp, dict) or not smtp.get("host") or not smtp.get("port"):
            raise BadCredentials("The account has no usable SMTP settings.")
        security = str(smtp.get("security") or "starttls").lower()
        if security not in SECURITY_MODES:
            raise BadCredentials("The account's SMTP security mode is not none, starttls or tls.")
        if bool(smtp.get("username")) != bool(smtp.get("password")):
            raise BadCredentials("The account's SMTP settings have a username or a password alone.")
        return cls(
            host=str(smtp["host"]),
            port=int(smtp["port"]),
            security=security,
            username=smtp.get("username") or None,
            password=smtp.get("password") or None,
            timeout=float(smtp.get("timeout") or 30.0),
            ca_pem=smtp.get("ca_pem") or None,
            verify=bool(smtp.get("verify", True)),
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


@dataclass
class Delivery:
    reply: str
    accepted: list[str]
    refused: dict[str, str]


def _path(address: str) -> bytes:
    """`<address>` for MAIL/RCPT; anything that could break the command line is refused."""
    if not address or any(c in address for c in "<>\r\n \x00") or not address.isascii():
        raise ValidationFailed(f"{address!r} cannot be used as an SMTP envelope address.")
    return b"<" + address.encode("ascii") + b">"


def _reply(exc: aiosmtplib.SMTPResponseException) -> str:
    return f"{exc.code} {exc.message}".strip()


def _shown_code(code: int, message: str) -> str:
    """What a tenant is shown of a reply: its code and enhanced status code, not its text.

    The text is the peer's own words (a banner, an echo of what it was sent); the full reply
    stays in the send ledger for operators.
    """
    enhanced = _ENHANCED.match(message or "")
    return f"{code} {enhanced.group(1)}" if enhanced else str(code)


def _from_response(exc: aiosmtplib.SMTPResponseException, stage: str) -> PostroomError:
    if not 200 <= exc.code < 600:
        return SmtpTemporaryError(f"The SMTP server sent a reply that is not SMTP to {stage}.")
    text = f"The SMTP server answered {_shown_code(exc.code, exc.message)} to {stage}."
    if 400 <= exc.code < 500:
        return SmtpTemporaryError(text)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return BadCredentials(f"The SMTP server refused the login ({exc.code}).")
    return SmtpRejected(text, smtp_code=exc.code, reply=_reply(exc))


def _broken(exc: BaseException, what: str) -> SmtpTemporaryError:
    """A failure of the connection itself, in words (never the peer's or the exception's)."""
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return SmtpTemporaryError(f"{what}: the server closed the connection.")
    return SmtpTemporaryError(f"{what}: {destination.failure_kind(exc)}.")


class SmtpConnection:
    """One SMTP session, opened on first use and reused for every message of a batch."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._client: aiosmtplib.SMTP | None = None

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
        try:
            sock = await destination.connect_socket(dest, cfg.timeout)
        except (OSError, TimeoutError) as exc:
            raise _broken(exc, "Could not connect to the SMTP server") from None
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
        except BaseException as exc:
            client.close()
            sock.close()  # the transport's socket, or ours if no transport was made
            if isinstance(exc, aiosmtplib.SMTPResponseException):
                raise _from_response(exc, stage) from None
            if isinstance(exc, (aiosmtplib.SMTPException, OSError, TimeoutError)):
                raise _broken(exc, "Could not open an SMTP session") from None
            raise
        # From here on one deadline covers a whole step (see `_deadline`) instead of one timer
        # per command: aiosmtplib's per-read wait_for is ~15 % of the CPU a message costs.
        client.timeout = None
        self._client = client

    async def _greet(self, client: aiosmtplib.SMTP) -> None:
        # Greet now (plain sessions skip it in connect): MAIL/RCPT go out as plain commands,
        # and a late EHLO from DATA would reset the transaction.
        try:
            await client.ehlo()
        except aiosmtplib.SMTPHeloError:
            await client.helo()

    async def _authenticate(self, client: aiosmtplib.SMTP) -> None:
        """AUTH when the account has credentials; none at all when it has none (a relay)."""
        cfg = self.config
        if cfg.username is None or cfg.password is None:
            return
        if not client.supports_extension("auth"):
            # Sending without AUTH would look like success to a relay that accepts anyone, and
            # put the mail out under another identity than the one configured.
            raise SmtpAuthUnavailable(
                "The SMTP server does not offer AUTH, but the account has SMTP credentials; "
                "refusing to send them unauthenticated."
            )
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

    def _deadline(self, size: int = 0) -> Any:
        # Slow links get time in proportion to the message: at least 64 KiB/s.
        return asyncio.timeout(self.config.timeout + size / 65536)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and client.is_connected:
            try:
                async with self._deadline():
                    await client.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()

    async def _reset(self) -> None:
        """Forget a half-done transaction so the session can carry the next message."""
        if self._client is None or not self._client.is_connected:
            return
        try:
            async with self._deadline():
                await self._client.rset()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            await self.close()

    async def send(
        self,
        *,
        sender: str,
        recipients: list[str],
        data: bytes,
        before_data: Callable[[], Awaitable[None]] | None = None,
    ) -> Delivery:
        """MAIL, RCPT for each recipient, `before_data()`, then DATA; the server's final answer."""
        if self._client is None or not self._client.is_connected:
            await self.connect()
        client = self._client
        assert client is not None
        refused: dict[str, str] = {}
        codes: dict[str, str] = {}
        try:
            # MAIL and RCPT as plain commands: the addresses were checked when the message was
            # composed, and skipping aiosmtplib's re-parsing of them is a third of its
            # per-message cost (bench_smtp).
            async with self._deadline():
                reply = await client.execute_command(b"MAIL", b"FROM:" + _path(sender))
                if reply.code != 250:
                    raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, sender)
                for rcpt in recipients:
                    reply = await client.execute_command(b"RCPT", b"TO:" + _path(rcpt))
                    if reply.code not in (250, 251):
                        refused[rcpt] = f"{reply.code} {reply.message}".strip()
                        codes[rcpt] = _shown_code(reply.code, reply.message)
        except aiosmtplib.SMTPResponseException as exc:
            await self._reset()
            raise _from_response(exc, "the envelope") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await self.close()
            raise _broken(exc, "The SMTP session broke before DATA") from None
        accepted = [r for r in recipients if r not in refused]
        if not accepted:
            await self._reset()
            first = next(iter(refused.values()))
            shown = next(iter(codes.values()))
            if all(v.startswith("4") for v in refused.values()):
                raise SmtpTemporaryError(f"The SMTP server deferred every recipient ({shown}).")
            raise SmtpRejected(
                f"The SMTP server refused every recipient ({shown}).",
                smtp_code=int(first[:3]) if first[:3].isdigit() else None,
                reply=first,
            )
        if before_data is not None:
            try:
                await before_data()
            except BaseException:
                await self._reset()
                raise
        try:
            async with self._deadline(len(data)):
                response = await client.data(data)
        except aiosmtplib.SMTPDataError as exc:
            # An explicit refusal of DATA or of the content: the server did not take the message.
            await self._reset()
            raise _from_response(exc, "DATA") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await self.close()
            what = (
                "closed the connection"
                if isinstance(exc, aiosmtplib.SMTPServerDisconnected)
                else destination.failure_kind(exc)
            )
            raise DeliveryUnknown(
                f"The connection to the SMTP server failed during DATA ({what}); "
                "the server may or may not have accepted the message."
            ) from None
        return Delivery(
            reply=f"{response.code} {response.message}".strip(), accepted=accepted, refused=refused
        )
