"""Account bodies: create (IMAP+SMTP or Nylas grant), patch, and the public account."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    model_validator,
)

from api.schemas.common import EMAIL_PATTERN, Strict

Security = Literal["none", "starttls", "tls"]
Host = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9.\-:\[\]]+$")]
# Strict: `"port": 1.0` or `"full": 0` are refused rather than coerced.
Port = Annotated[StrictInt, Field(ge=1, le=65535)]
SyncInterval = Annotated[StrictInt, Field(ge=30, le=86400)]


# CR and LF end an IMAP/POP3/SMTP command line and NUL ends a SASL PLAIN field: a login
# holding one would let its owner write commands of their own to the server.
NO_LINE_BREAKS = r"^[^\r\n\x00]*$"


class ServerSettings(Strict):
    host: Host
    port: Port
    security: Security = "tls"
    username: str = Field(min_length=1, max_length=320, pattern=NO_LINE_BREAKS)
    password: str = Field(
        min_length=1,
        max_length=1000,
        pattern=NO_LINE_BREAKS,
        json_schema_extra={"writeOnly": True},
    )


class SmtpSettings(Strict):
    """SMTP without username and password sends without AUTH (an internal relay)."""

    host: Host
    port: Port
    security: Security = "tls"
    username: str | None = Field(default=None, min_length=1, max_length=320, pattern=NO_LINE_BREAKS)
    password: str | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        pattern=NO_LINE_BREAKS,
        json_schema_extra={"writeOnly": True},
    )

    @model_validator(mode="after")
    def _credentials_together(self) -> SmtpSettings:
        if (self.username is None) != (self.password is None):
            raise ValueError(
                "smtp.username and smtp.password go together: give both, or neither to send "
                "without AUTH."
            )
        return self


class OAuth2Grant(Strict):
    """An OAuth2 grant in place of passwords: servers and scopes come from the app."""

    app_id: uuid.UUID
    refresh_token: str = Field(min_length=1, max_length=8000, json_schema_extra={"writeOnly": True})
    access_token: str | None = Field(
        default=None, min_length=1, max_length=8000, json_schema_extra={"writeOnly": True}
    )
    expires_at: AwareDatetime | None = None


def _servers_or_grant(body: Any, inbound: str) -> None:
    has_servers = getattr(body, inbound) is not None or body.smtp is not None
    if body.oauth2 is not None and has_servers:
        raise ValueError(f"Give `oauth2` or `{inbound}` and `smtp`, not both.")
    if body.oauth2 is None and (getattr(body, inbound) is None or body.smtp is None):
        raise ValueError(f"`{inbound}` and `smtp` are required (or `oauth2`).")


class NylasGrant(Strict):
    # Grant ids go into Nylas URL paths: nothing that could add a path segment or a query.
    grant_id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_-]{1,200}$")


class ImapAccountCreate(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "provider": "imap",
                    "email": "ana@example.com",
                    "imap": {
                        "host": "imap.example.com",
                        "port": 993,
                        "security": "tls",
                        "username": "ana@example.com",
                        "password": "app-password",
                    },
                    "smtp": {
                        "host": "smtp.example.com",
                        "port": 587,
                        "security": "starttls",
                        "username": "ana@example.com",
                        "password": "app-password",
                    },
                    "sync_interval_s": 300,
                }
            ]
        },
    )
    provider: Literal["imap"]
    email: str = Field(pattern=EMAIL_PATTERN, max_length=320)
    imap: ServerSettings | None = None
    smtp: SmtpSettings | None = None
    oauth2: OAuth2Grant | None = None
    sync_interval_s: SyncInterval = 300

    @model_validator(mode="after")
    def _login(self) -> ImapAccountCreate:
        _servers_or_grant(self, "imap")
        return self


class Pop3AccountCreate(Strict):
    """A POP3 maildrop (synced into INBOX) with SMTP for sending."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "provider": "pop3",
                    "email": "ana@example.com",
                    "pop3": {
                        "host": "pop.example.com",
                        "port": 995,
                        "security": "tls",
                        "username": "ana@example.com",
                        "password": "app-password",
                    },
                    "smtp": {
                        "host": "smtp.example.com",
                        "port": 587,
                        "security": "starttls",
                        "username": "ana@example.com",
                        "password": "app-password",
                    },
                    "sync_interval_s": 300,
                }
            ]
        },
    )
    provider: Literal["pop3"]
    email: str = Field(pattern=EMAIL_PATTERN, max_length=320)
    pop3: ServerSettings | None = None
    smtp: SmtpSettings | None = None
    oauth2: OAuth2Grant | None = None
    sync_interval_s: SyncInterval = 300

    @model_validator(mode="after")
    def _login(self) -> Pop3AccountCreate:
        _servers_or_grant(self, "pop3")
        return self


class NylasAccountCreate(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "provider": "nylas",
                    "email": "ana@example.com",
                    "nylas": {"grant_id": "6b1f0c9e-grant"},
                }
            ]
        },
    )
    provider: Literal["nylas"]
    email: str = Field(pattern=EMAIL_PATTERN, max_length=320)
    nylas: NylasGrant
    sync_interval_s: SyncInterval = 300


AccountCreate = Annotated[
    ImapAccountCreate | Pop3AccountCreate | NylasAccountCreate, Field(discriminator="provider")
]


class AccountUpdate(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"sync_interval_s": 600, "status": "active"}]},
    )
    sync_interval_s: SyncInterval | None = None
    status: Literal["active", "disabled"] | None = None
    imap: ServerSettings | None = None
    pop3: ServerSettings | None = None
    smtp: SmtpSettings | None = None


class AccountPublic(BaseModel):
    id: str
    provider: Literal["imap", "pop3", "nylas"]
    email: str
    status: Literal["active", "reauth_required", "disabled"]
    sync_interval_s: int
    last_sync_at: datetime | None
    created_at: datetime


class AccountPage(BaseModel):
    data: list[AccountPublic]
    next_cursor: str | None = None


class SyncRequest(Strict):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"folder": None, "full": False}]}
    )
    folder: str | None = Field(default=None, min_length=1, max_length=500)
    full: StrictBool = False


class FolderPublic(BaseModel):
    id: str
    name: str
    role: str | None
    message_count: int


class FolderList(BaseModel):
    data: list[FolderPublic]


class ServerCheck(BaseModel):
    ok: bool
    message: str


class VerifyResult(BaseModel):
    """Per server ("imap" or "pop3", "smtp"; "nylas" for a grant): did the login work."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "ok": False,
                    "checks": {
                        "pop3": {"ok": True, "message": "Logged in to the POP3 server."},
                        "smtp": {
                            "ok": False,
                            "message": "The SMTP server refused the login: "
                            "wrong username or password.",
                        },
                    },
                }
            ]
        }
    )
    ok: bool
    checks: dict[str, ServerCheck]
