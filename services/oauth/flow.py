"""The hosted connect flow: authorization code with PKCE (RFC 6749 4.1, RFC 7636 S256).

`authorize` stores a one-time state row and answers the provider's URL. The provider sends the
browser to `/oauth/callback`; `callback` checks the signed state, consumes its row (a replay
finds it used), exchanges the code with the derived code_verifier, learns the address (the id
token's `email`, else the app's userinfo URL), creates or reconnects the account, and answers
where to send the browser: `redirect_to` with `account_id`, or with `error=<short code>`.
Each database step is a short transaction of its own; the token endpoint is called between
them, with none open.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import structlog

from database.engine import Database
from database.repositories.oauth import apps as apps_repo
from database.repositories.oauth import states as states_repo
from services.accounts import oauth_connect
from services.errors import BadRequest, PostroomError, ValidationFailed
from services.oauth import endpoint, redirects, state
from services.oauth.apps import client_of, get_app
from services.oauth.http import OAuthEndpointUnavailable
from settings import Settings

log = structlog.get_logger(__name__)
CALLBACK_PATH = "/oauth/callback"


class RedirectNotAllowed(ValidationFailed):
    """`redirect_to` is not under one of the app's allowed_redirect_origins."""

    code = "redirect_not_allowed"


class OAuthStateInvalid(BadRequest):
    """The callback's state is unknown, expired, forged or used already."""

    code = "oauth_state_invalid"


def redirect_uri(settings: Settings, request_base: str) -> str:
    base = settings.public_url or request_base
    return base.rstrip("/") + CALLBACK_PATH


async def authorize(
    db: Database,
    *,
    settings: Settings,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    app_id: uuid.UUID,
    redirect_to: str,
    email: str | None,
    request_base: str,
) -> str:
    """The provider's authorization URL for this tenant and app (valid 10 minutes, once)."""
    nonce = uuid.uuid4()
    async with db.transaction() as s:
        app = await get_app(s, tenant_id, app_id)
        if not redirects.allowed(redirect_to, app.config.get("allowed_redirect_origins", [])):
            raise RedirectNotAllowed(
                "redirect_to is not under one of the app's allowed_redirect_origins."
            )
        await states_repo.create(
            s,
            state_id=nonce,
            tenant_id=tenant_id,
            app_id=app.id,
            user_id=user_id,
            redirect_to=redirect_to,
            login_hint=email,
            expires_at=datetime.now(UTC) + timedelta(seconds=state.STATE_TTL_S),
        )
    verifier = state.code_verifier(state.first_key(settings), nonce)
    params = {
        "response_type": "code",
        "client_id": app.client_id,
        "redirect_uri": redirect_uri(settings, request_base),
        "scope": " ".join(app.config.get("scopes", [])),
        "state": state.sign(settings, nonce=nonce, tenant_id=tenant_id, app_id=app.id),
        "code_challenge": state.code_challenge(verifier),
        "code_challenge_method": "S256",
        **app.config.get("authorize_params", {}),
    }
    if email:
        params["login_hint"] = email
    url = str(app.config["authorize_url"])
    return url + ("&" if "?" in url else "?") + urlencode(params)


def _address(settings: Settings, provider: str, tokens: endpoint.TokenSet) -> str | None:
    claims = endpoint.id_token_claims(tokens.id_token) if tokens.id_token else {}
    email = claims.get("email")
    if isinstance(email, str) and "@" in email and claims.get("email_verified") is not False:
        return email
    # Entra id tokens often lack `email` for work accounts; the sign-in name is the address.
    upn = claims.get("preferred_username")
    if provider == "microsoft" and isinstance(upn, str) and "@" in upn:
        return upn
    return None


async def callback(
    db: Database,
    *,
    settings: Settings,
    code: str | None,
    state_text: str | None,
    error: str | None,
    request_base: str,
) -> str:
    """Where to send the browser; OAuthStateInvalid when there is nowhere safe to send it."""
    claims = state.verify(settings, state_text or "")
    if claims is None:
        raise OAuthStateInvalid("The sign-in link is invalid or has expired; start again.")
    async with db.transaction() as s:
        row = await states_repo.consume(
            s, state_id=claims.nonce, tenant_id=claims.tenant_id, app_id=claims.app_id
        )
        app = await apps_repo.get_live(s, claims.tenant_id, claims.app_id) if row else None
    if row is None:
        raise OAuthStateInvalid("This sign-in was used already or has expired; start again.")
    if app is None or not redirects.allowed(
        row.redirect_to, app.config.get("allowed_redirect_origins", [])
    ):
        raise OAuthStateInvalid("The app of this sign-in no longer allows its redirect.")

    def back(**params: str) -> str:
        return redirects.with_params(row.redirect_to, **params)

    if error or not code:
        return back(error="access_denied" if error == "access_denied" else "authorization_failed")
    try:
        tokens = await endpoint.exchange_code(
            client_of(settings, app),
            code=code,
            verifier=state.code_verifier(claims.key, claims.nonce),
            redirect_uri=redirect_uri(settings, request_base),
            settings=settings,
        )
        if tokens.refresh_token is None:
            return back(error="no_refresh_token")
        email = _address(settings, app.provider, tokens)
        if email is None and app.config.get("userinfo_url"):
            email = await endpoint.userinfo_email(
                str(app.config["userinfo_url"]), tokens.access_token, settings
            )
    except endpoint.GrantRevoked:
        return back(error="invalid_grant")
    except OAuthEndpointUnavailable:
        return back(error="temporarily_unavailable")
    except PostroomError:
        return back(error="token_exchange_failed")
    if not email:
        return back(error="email_unknown")
    inbound = "imap" if app.config.get("imap") else "pop3"
    try:
        async with db.transaction() as s:
            existing = await oauth_connect.reconnect_target(s, claims.tenant_id, email, inbound)
            account = await oauth_connect.connect(
                s,
                settings=settings,
                tenant_id=claims.tenant_id,
                user_id=row.user_id,
                app=app,
                inbound=inbound,
                email=email,
                grant=oauth_connect.Grant(
                    refresh_token=tokens.refresh_token,
                    access_token=tokens.access_token,
                    expires_at=tokens.expires_at,
                ),
                account=existing,
            )
    except PostroomError as exc:
        log.info("oauth_connect_refused", code=exc.code)
        return back(error=exc.code)
    log.info("oauth_account_connected", account_id=str(account.id), app_id=str(app.id))
    return back(account_id=str(account.id))
