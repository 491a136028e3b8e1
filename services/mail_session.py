"""What the IMAP and POP3 clients share: one checked connection, TLS, and errors in our words.

Both connect the same way: the destination policy (services/destination.py) resolves and
checks the host, the stream goes to the address it checked, TLS starts at once (`tls`) or after
the protocol's upgrade command (`starttls`), then the greeting and the login. What a client adds
is its `_handshake` (greeting, capabilities, STARTTLS/STLS) and its `_login`.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from services import destination
from services.errors import ProviderPermanentError, ProviderTemporaryError
from services.oauth.sasl import TokenSource

SECURITY_MODES = ("none", "starttls", "tls")


@dataclass
class MailServerConfig:
    """Where and how to log in to one IMAP or POP3 server (a subclass names which)."""

    # The key of the account's decrypted credentials that holds this server: "imap" or "pop3".
    section: ClassVar[str]

    host: str
    port: int
    username: str
    # The login: a password, or `oauth` (an OAuth2 grant's tokens, services/oauth/refresh.py)
    # that the client asks for a token when it logs in (services/accounts/credentials.py).
    password: str = field(default="", repr=False)
    security: str = "tls"  # none | starttls | tls
    timeout: float = 30.0
    verify_tls: bool = True
    # POSTROOM_ALLOWED_PRIVATE_MAIL_HOSTS; None reads it from the process settings.
    allowed_private_hosts: str | None = None
    oauth: TokenSource | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_credentials(
        cls,
        data: dict[str, Any],
        *,
        timeout: float = 30.0,
        allowed_private_hosts: str | None = None,
    ) -> Self:
        server = data.get(cls.section) or {}
        return cls(
            host=server["host"],
            port=int(server["port"]),
            username=server["username"],
            password=server.get("password") or "",
            security=server.get("security", "tls"),
            timeout=timeout,
            verify_tls=bool(server.get("verify_tls", True)),
            allowed_private_hosts=allowed_private_hosts,
            oauth=server.get("oauth"),
        )


class MailSession:
    """One connection to a tenant's IMAP or POP3 server (a subclass names which)."""

    # "IMAP" or "POP3": in the policy's checks and in every error a tenant reads.
    role: ClassVar[str]
    # The protocol's refusal of a command (a tagged NO/BAD, an -ERR).
    refusal: ClassVar[type[Exception]]
    # The stream reader's buffer limit: the longest line a reader may hold.
    read_limit: ClassVar[int] = 2**16

    config: Any  # host, port, security, timeout, verify_tls, allowed_private_hosts
    _reader: asyncio.StreamReader | None
    _writer: asyncio.StreamWriter | None
    _command: str

    async def connect(self) -> Self:
        cfg = self.config
        if cfg.security not in SECURITY_MODES:
            raise ProviderPermanentError(
                f"The {self.role} security mode is not none, starttls or tls."
            )
        context = self._ssl_context() if cfg.security in ("tls", "starttls") else None
        # Checked here, at every connection, and connected to the address that was checked.
        dest = await destination.resolve(
            cfg.host, cfg.port, role=self.role, allowed=cfg.allowed_private_hosts
        )
        try:
            self._reader, self._writer = await self._open(dest, context)
        except (OSError, TimeoutError) as exc:
            # Only what failed: never the address, the port or the peer's words.
            raise self._unreachable(exc) from None
        try:
            await self._handshake(context, dest.host)
            await self._login()
        except self.refusal:
            self._drop()
            # Before login the peer is not known to be the tenant's server: none of its words.
            raise ProviderPermanentError(
                f"The {self.role} server refused {self._command} before login."
            ) from None
        except (OSError, TimeoutError) as exc:  # the TLS upgrade or the socket
            self._drop()
            raise self._unreachable(exc) from None
        except BaseException:
            self._drop()
            raise
        return self

    def _unreachable(self, exc: BaseException) -> ProviderTemporaryError:
        return ProviderTemporaryError(
            f"Could not connect to the {self.role} server: {destination.failure_kind(exc)}."
        )

    def _drop(self) -> None:
        """Close without a goodbye: no LOGOUT to a stranger, no QUIT that commits POP3 DELEs."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    async def _open(
        self, dest: destination.Destination, context: ssl.SSLContext | None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        tls = context if self.config.security == "tls" else None  # STARTTLS upgrades later
        return await destination.open_stream(
            dest, self.config.timeout, tls=tls, limit=self.read_limit
        )

    def _ssl_context(self) -> ssl.SSLContext:
        return destination.tls_context(verify=self.config.verify_tls)

    async def _handshake(self, context: ssl.SSLContext | None, server_name: str) -> None:
        raise NotImplementedError

    async def _login(self) -> None:
        raise NotImplementedError
