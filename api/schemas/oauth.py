"""OAuth app bodies (API.md "OAuth2 mailboxes"): create, the public app, authorize."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from api.schemas.accounts import Host, Port, Security
from api.schemas.common import EMAIL_PATTERN, Strict
from services.oauth.redirects import normal_origin

Url = Annotated[str, Field(min_length=8, max_length=2000)]
Scope = Annotated[str, Field(min_length=1, max_length=300, pattern=r"^[\x21-\x7e]+$")]


class OAuthServer(Strict):
    host: Host
    port: Port
    security: Security = "tls"


class OAuthAppCreate(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "provider": "microsoft",
                    "client_id": "00000000-0000-0000-0000-000000000000",
                    "client_secret": "app-secret",
                    "allowed_redirect_origins": ["https://app.example.com"],
                    "tenant": "common",
                }
            ]
        },
    )
    provider: Literal["google", "microsoft", "generic"]
    client_id: str = Field(min_length=1, max_length=500)
    client_secret: str = Field(min_length=1, max_length=2000, json_schema_extra={"writeOnly": True})
    allowed_redirect_origins: list[Url] = Field(min_length=1, max_length=20)
    # microsoft: the Entra tenant (a GUID or a domain, or common/organizations/consumers).
    tenant: str | None = Field(
        default=None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9.-]+$"
    )
    authorize_url: Url | None = None
    token_url: Url | None = None
    userinfo_url: Url | None = None
    scopes: list[Scope] | None = Field(default=None, max_length=50)
    imap: OAuthServer | None = None
    smtp: OAuthServer | None = None
    # generic: the POP3 server; google/microsoft: `{}` adds the preset POP3 host (and scope).
    pop3: dict[str, Any] | None = None

    @field_validator("allowed_redirect_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        return [normal_origin(v) for v in value]

    @model_validator(mode="after")
    def _generic_fields(self) -> OAuthAppCreate:
        if self.provider == "generic":
            missing = [
                k
                for k in ("authorize_url", "token_url", "scopes", "imap", "smtp")
                if getattr(self, k) is None
            ]
            if missing:
                raise ValueError(f"A generic app needs {', '.join(missing)}.")
            if self.pop3 is not None:
                self.pop3 = OAuthServer.model_validate(self.pop3).model_dump()
        elif self.tenant is not None and self.provider != "microsoft":
            raise ValueError("`tenant` is for microsoft apps only.")
        return self


class OAuthAppPublic(BaseModel):
    id: str
    provider: str
    client_id: str
    allowed_redirect_origins: list[str]
    tenant: str | None = None
    authorize_url: str | None
    token_url: str | None
    userinfo_url: str | None
    scopes: list[str]
    imap: dict[str, Any] | None
    smtp: dict[str, Any] | None
    pop3: dict[str, Any] | None
    created_at: datetime


class OAuthAppPage(BaseModel):
    data: list[OAuthAppPublic]
    next_cursor: str | None = None


class AuthorizeRequest(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"redirect_to": "https://app.example.com/connected", "email": None}]
        },
    )
    redirect_to: Url
    email: str | None = Field(default=None, pattern=EMAIL_PATTERN, max_length=320)


class AuthorizeAnswer(BaseModel):
    url: str
