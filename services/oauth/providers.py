"""Provider presets: what `google` and `microsoft` apps connect to, and how `generic` apps say it.

The facts (hosts, ports, scopes, endpoints) are the providers' published ones:
- Gmail: IMAP imap.gmail.com:993 and SMTP smtp.gmail.com:465 over TLS, POP pop.gmail.com:995;
  the one scope `https://mail.google.com/` covers all three (Google's "OAuth 2.0 Mechanism").
- Microsoft 365 / Outlook: IMAP outlook.office365.com:993 TLS, POP outlook.office365.com:995 TLS,
  SMTP smtp.office365.com:587 STARTTLS; scopes on the `https://outlook.office.com/` resource,
  `offline_access` for a refresh token; v2.0 endpoints per Entra tenant (`common` by default).
`openid email` are asked for as well: the id token's `email` claim is how the hosted flow
learns the mailbox address without a userinfo call.
"""

from __future__ import annotations

from typing import Any

GOOGLE_MAIL_SCOPE = "https://mail.google.com/"
MS_RESOURCE = "https://outlook.office.com/"
MS_IMAP_SCOPE = MS_RESOURCE + "IMAP.AccessAsUser.All"
MS_SMTP_SCOPE = MS_RESOURCE + "SMTP.Send"
MS_POP_SCOPE = MS_RESOURCE + "POP.AccessAsUser.All"


def _server(host: str, port: int, security: str) -> dict[str, Any]:
    return {"host": host, "port": port, "security": security}


def google(*, pop3: bool) -> dict[str, Any]:
    return {
        "authorize_url": "https://accounts.google.com/o/oauth2/v2/auth",
        "token_url": "https://oauth2.googleapis.com/token",
        "userinfo_url": "https://openidconnect.googleapis.com/v1/userinfo",
        "scopes": ["openid", "email", GOOGLE_MAIL_SCOPE],
        "imap": _server("imap.gmail.com", 993, "tls"),
        "smtp": _server("smtp.gmail.com", 465, "tls"),
        "pop3": _server("pop.gmail.com", 995, "tls") if pop3 else None,
        # Google returns a refresh token only with offline access and, after the first
        # consent, only when the consent screen is shown again.
        "authorize_params": {"access_type": "offline", "prompt": "consent"},
    }


def microsoft(*, tenant: str, pop3: bool) -> dict[str, Any]:
    base = f"https://login.microsoftonline.com/{tenant}/oauth2/v2.0"
    scopes = ["openid", "email", "offline_access", MS_IMAP_SCOPE, MS_SMTP_SCOPE]
    if pop3:
        scopes.append(MS_POP_SCOPE)
    return {
        "authorize_url": f"{base}/authorize",
        "token_url": f"{base}/token",
        # Graph's userinfo wants a Graph token; ours is for outlook.office.com, so the
        # address comes from the id token only (`email`, else `preferred_username`).
        "userinfo_url": None,
        "scopes": scopes,
        "tenant": tenant,
        "imap": _server("outlook.office365.com", 993, "tls"),
        "smtp": _server("smtp.office365.com", 587, "starttls"),
        "pop3": _server("outlook.office365.com", 995, "tls") if pop3 else None,
        "authorize_params": {"prompt": "select_account"},
    }


def app_config(body: dict[str, Any]) -> dict[str, Any]:
    """The stored config of an app from its create body (presets filled in)."""
    provider = body["provider"]
    origins = list(body.get("allowed_redirect_origins") or [])
    wants_pop3 = body.get("pop3") is not None
    if provider == "google":
        config = google(pop3=wants_pop3)
    elif provider == "microsoft":
        config = microsoft(tenant=body.get("tenant") or "common", pop3=wants_pop3)
    else:
        config = {
            "authorize_url": body["authorize_url"],
            "token_url": body["token_url"],
            "userinfo_url": body.get("userinfo_url"),
            "scopes": list(body["scopes"]),
            "imap": _server(**body["imap"]),
            "smtp": _server(**body["smtp"]),
            "pop3": _server(**body["pop3"]) if body.get("pop3") else None,
            "authorize_params": {},
        }
    config["allowed_redirect_origins"] = origins
    return config
