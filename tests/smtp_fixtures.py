"""Real in-process SMTP servers (aiosmtpd) that capture what they receive, in every security
mode and with the failure behaviours the send tests need; plus an IMAP/SMTP account factory."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import tempfile
import uuid
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.peers import free_port

USERNAME, PASSWORD = "sender@example.com", "s3cret-pw"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.data, policy=policy.default)  # type: ignore[return-value]


@dataclass
class Handler:
    """mode: ok | 4xx_then_2xx | 5xx | drop_after_data | hang_after_data, and for RCPT:
    rcpt_4xx_then_2xx (each address deferred once) | rcpt_5xx (each refused); the RCPT
    answers quote the address, as real servers do. `pipelining`: offer PIPELINING in EHLO,
    as most servers do (aiosmtpd reads commands one line at a time, so a pipelined group
    is served like any other)."""

    mode: str = "ok"
    pipelining: bool = True
    received: list[Received] = field(default_factory=list)
    data_calls: int = 0
    deferred: set[str] = field(default_factory=set)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")  # before the last line, "250 HELP"
        return responses

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if self.mode == "rcpt_5xx":
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if self.mode == "rcpt_4xx_then_2xx" and address not in self.deferred:
            self.deferred.add(address)
            return f"450 4.2.0 <{address}>: Recipient address rejected: Greylisted"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.data_calls += 1
        if self.mode == "4xx_then_2xx" and self.data_calls == 1:
            return "451 4.3.0 Temporary local problem, try again"
        if self.mode == "5xx":
            return "554 5.7.1 Message rejected: policy violation"
        self.received.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content))
        )
        if self.mode == "hang_after_data":
            await asyncio.sleep(3)  # longer than the client's timeout in the test
        if self.mode == "drop_after_data":
            # The content is in; the final answer never reaches the client.
            server.transport.abort()
        return "250 2.0.0 Ok: queued"


def _authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login.decode() == USERNAME
        and auth_data.password.decode() == PASSWORD
    )
    # handled=False: aiosmtpd answers 535 itself on failure.
    return AuthResult(success=ok, handled=False)


@dataclass
class Certificate:
    cert_pem: str
    cert_path: Path
    key_path: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert_path, self.key_path)
        return ctx


def make_certificate() -> Certificate:
    """A self-signed certificate for 127.0.0.1 / localhost, made fresh for the session."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = Path(tempfile.mkdtemp(prefix="postroom-smtp-cert-"))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    (folder / "cert.pem").write_text(cert_pem)
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Certificate(cert_pem, folder / "cert.pem", folder / "key.pem")


@dataclass
class SmtpPeer:
    controller: Controller
    handler: Handler
    port: int
    security: str
    auth: bool
    ca_pem: str | None

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    def credential(self, password: str = PASSWORD) -> dict[str, Any]:
        """The `smtp` part of an account credential pointing at this server."""
        smtp: dict[str, Any] = {"host": "127.0.0.1", "port": self.port, "security": self.security}
        if self.auth:
            smtp.update(username=USERNAME, password=password)
        if self.ca_pem:
            smtp["ca_pem"] = self.ca_pem
        return smtp

    def stop(self) -> None:
        self.controller.stop()


def start_smtp(
    *,
    mode: str = "ok",
    security: str = "none",
    auth: bool = False,
    cert: Certificate | None = None,
    pipelining: bool = True,
) -> SmtpPeer:
    handler = Handler(mode=mode, pipelining=pipelining)
    port = free_port()
    kwargs: dict[str, Any] = {}
    if auth:
        kwargs.update(authenticator=_authenticator, auth_required=True, auth_require_tls=False)
    if security == "starttls":
        assert cert is not None
        kwargs.update(tls_context=cert.server_context(), require_starttls=True)
    elif security == "tls":
        assert cert is not None
        kwargs.update(ssl_context=cert.server_context())
    controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    return SmtpPeer(controller, handler, port, security, auth, cert.cert_pem if cert else None)


async def create_smtp_account(
    db: Any,
    settings: Any,
    *,
    smtp: dict[str, Any],
    imap: dict[str, Any] | None = None,
    email: str = USERNAME,
    display_name: str | None = None,
    tenant: Any = None,
) -> Any:
    """An IMAP/SMTP account with an encrypted credential, as the API would store it."""
    from database.models import Account, Credential, Provider
    from services.crypto import encrypt_json
    from tests.factories import create_tenant, create_user

    tenant = tenant or await create_tenant(db)
    user = await create_user(db, tenant)
    secrets: dict[str, Any] = {"smtp": smtp}
    if imap is not None:
        secrets["imap"] = imap
    async with db.transaction() as s:
        account = Account(
            tenant_id=tenant.id,
            user_id=user.id,
            provider=Provider.imap,
            email=email,
            settings={"display_name": display_name} if display_name else {},
        )
        s.add(account)
        await s.flush()
        s.add(
            Credential(
                tenant_id=tenant.id,
                account_id=account.id,
                ciphertext=encrypt_json(settings, secrets),
            )
        )
    return account


async def create_send_event(
    db: Any, *, account: Any, kwargs: dict[str, Any], key: str | None = None
) -> tuple[Any, str, bool]:
    """Insert a `postroom.mail.send` event the way the API does; (event id, task id, created).

    `kwargs` may override the ids and give the mail (to, cc, bcc, subject, body_text,
    body_html, attachment_ids, reply_to_message_id): the mail goes into the event's
    `send_draft` row, the ids into its task kwargs."""
    from database.repositories.events import rows as events_repo
    from database.repositories.outbound import drafts as outbound_drafts

    event_id, task_id = uuid.uuid4(), str(uuid.uuid4())
    mail = {k: v for k, v in kwargs.items() if k not in ("account_id", "tenant_id", "user_id")}
    task_kwargs = {
        "account_id": str(account.id),
        "tenant_id": str(account.tenant_id),
        "user_id": str(account.user_id),
        **{k: v for k, v in kwargs.items() if k not in mail},
    }
    draft = outbound_drafts.values_from_request(
        {
            "to": mail.get("to") or [],
            "cc": mail.get("cc"),
            "bcc": mail.get("bcc"),
            "subject": mail.get("subject"),
            "text": mail.get("body_text"),
            "html": mail.get("body_html"),
            "reply_to_message_id": mail.get("reply_to_message_id"),
        },
        list(mail.get("attachment_ids") or []),
    )
    async with db.transaction() as s:
        created = await events_repo.insert_once(
            s,
            event_id=event_id,
            source="api",
            type="mail.send",
            external_id=f"{account.tenant_id}:{key}" if key else None,
            task_name="postroom.mail.send",
            task_id=task_id,
            payload=task_kwargs,
            stale_after_s=30,
            task_kwargs=task_kwargs,
            tenant_id=account.tenant_id,
            user_id=account.user_id,
            account_id=account.id,
        )
        if created:
            await outbound_drafts.add(
                s, tenant_id=account.tenant_id, event_id=event_id, draft=draft
            )
        if not created and key:
            existing = await events_repo.get_by_external_id(s, "api", f"{account.tenant_id}:{key}")
            event_id = existing.id if existing else event_id
    return event_id, task_id, created
