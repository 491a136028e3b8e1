"""SMTP submission through aiosmtplib: security none | starttls | tls, AUTH, one connection
reused for a batch, and failures sorted into what the retry policy and the send ledger need.

The one step whose outcome can be unknown is the DATA transfer: once the message content
has been written, a dropped connection or a timeout leaves us not knowing whether the server
queued it. That is reported as `DeliveryUnknown`, never as something to retry.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiosmtplib

from services.errors import (
    BadCredentials,
    PostroomError,
    ProviderPermanentError,
    TransientError,
    ValidationFailed,
)

SECURITY_MODES = ("none", "starttls", "tls")


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

    @classmethod
    def from_credential(cls, smtp: Any) -> SmtpConfig:
        """The `smtp` part of an account's decrypted credential."""
        if not isinstance(smtp, dict) or not smtp.get("host") or not smtp.get("port"):
            raise BadCredentials("The account has no usable SMTP settings.")
        security = str(smtp.get("security") or "starttls").lower()
        if security not in SECURITY_MODES:
            raise BadCredentials(f"Unknown SMTP security mode {security!r}.")
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


def _from_response(exc: aiosmtplib.SMTPResponseException, stage: str) -> PostroomError:
    text = f"The SMTP server answered {_reply(exc)} to {stage}."
    if 400 <= exc.code < 500 or exc.code < 0:
        return SmtpTemporaryError(text)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return BadCredentials(f"The SMTP server refused the login ({exc.code}).")
    return SmtpRejected(text, smtp_code=exc.code, reply=_reply(exc))


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
        client = aiosmtplib.SMTP(
            hostname=cfg.host,
            port=cfg.port,
            timeout=cfg.timeout,
            use_tls=cfg.security == "tls",
            start_tls=cfg.security == "starttls",
            tls_context=cfg.tls_context() if cfg.security != "none" else None,
            username=cfg.username,
            password=cfg.password,
        )
        try:
            await client.connect()
            # Greet now (plain sessions skip it in connect): MAIL/RCPT below go out as plain
            # commands, and a late EHLO from DATA would reset the transaction.
            if client.last_ehlo_response is None and client.last_helo_response is None:
                try:
                    await client.ehlo()
                except aiosmtplib.SMTPHeloError:
                    await client.helo()
        except aiosmtplib.SMTPResponseException as exc:
            client.close()
            raise _from_response(exc, "the connection") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            client.close()
            raise SmtpTemporaryError(
                f"Could not open an SMTP session with {cfg.host}:{cfg.port} ({type(exc).__name__})."
            ) from None
        # From here on one deadline covers a whole step (see `_deadline`) instead of one timer
        # per command: aiosmtplib's per-read wait_for is ~15 % of the CPU a message costs.
        client.timeout = None
        self._client = client

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
        except aiosmtplib.SMTPResponseException as exc:
            await self._reset()
            raise _from_response(exc, "the envelope") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await self.close()
            raise SmtpTemporaryError(
                f"The SMTP session broke before DATA ({type(exc).__name__})."
            ) from None
        accepted = [r for r in recipients if r not in refused]
        if not accepted:
            await self._reset()
            first = next(iter(refused.values()))
            if all(v.startswith("4") for v in refused.values()):
                raise SmtpTemporaryError(f"The SMTP server deferred every recipient: {first}.")
            raise SmtpRejected(
                f"The SMTP server refused every recipient: {first}.",
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
            raise DeliveryUnknown(
                f"The connection to the SMTP server was lost during DATA ({type(exc).__name__}); "
                "the server may or may not have accepted the message."
            ) from None
        return Delivery(
            reply=f"{response.code} {response.message}".strip(), accepted=accepted, refused=refused
        )
