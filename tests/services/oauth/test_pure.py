"""The OAuth pieces that need no peer: SASL strings, PKCE, the signed state, redirect checks."""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

import pytest

from services.oauth import redirects, sasl, state


def test_xoauth2_initial_response_is_googles_format() -> None:
    raw = base64.b64decode(
        sasl.xoauth2("someuser@example.com", "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg")
    )
    assert (
        raw == b"user=someuser@example.com\x01"
        b"auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01"
    )


def test_oauthbearer_escapes_the_user_as_rfc_7628_says() -> None:
    raw = base64.b64decode(
        sasl.oauthbearer("a,b=c@example.com", "tok", host="imap.example.com", port=993)
    )
    assert (
        raw == b"n,a=a=2Cb=3Dc@example.com,\x01"
        b"host=imap.example.com\x01port=993\x01auth=Bearer tok\x01\x01"
    )


def test_error_challenge_says_when_the_token_was_refused() -> None:
    expired = base64.b64encode(b'{"status":"401","schemes":"bearer","scope":"mail"}')
    assert sasl.token_refused(sasl.error_challenge(b" " + expired + b"\r\n"))
    scope = base64.b64encode(b'{"status":"insufficient_scope"}')
    assert not sasl.token_refused(sasl.error_challenge(scope))
    assert sasl.error_challenge(b"not base64 !!") == {}
    assert sasl.error_challenge(base64.b64encode(b"[1]")) == {}


def test_mechanism_choice_prefers_xoauth2() -> None:
    assert sasl.choose({"AUTH=PLAIN", "AUTH=OAUTHBEARER", "AUTH=XOAUTH2"}) == "XOAUTH2"
    assert sasl.choose({"AUTH=OAUTHBEARER"}) == "OAUTHBEARER"
    assert sasl.choose({"AUTH=PLAIN"}) is None


def test_pkce_s256_matches_rfc_7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert state.code_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_state_is_bound_signed_and_expires(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    nonce, tenant, app = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    signed = state.sign(settings, nonce=nonce, tenant_id=tenant, app_id=app)
    claims = state.verify(settings, signed)
    assert claims is not None and (claims.nonce, claims.tenant_id, claims.app_id) == (
        nonce,
        tenant,
        app,
    )
    verifier = state.code_verifier(claims.key, nonce)
    assert len(verifier) == 43 and verifier == state.code_verifier(state.first_key(settings), nonce)
    other = settings.model_copy(update={"credential_keys": None, "database_url": "elsewhere"})
    assert state.verify(other, signed) is None
    now = time.time()
    monkeypatch.setattr(state.time, "time", lambda: now + state.STATE_TTL_S + 1)
    assert state.verify(settings, signed) is None


@pytest.mark.parametrize(
    ("target", "ok"),
    [
        ("https://app.example.com/connected?x=1", True),
        ("https://APP.example.com:443/", True),
        ("https://app.example.com/oauth/done", True),
        ("http://app.example.com/connected", False),
        ("https://app.example.com.evil.net/", False),
        ("https://evil.net/?https://app.example.com", False),
        ("https://app.example.com@evil.net/", False),
        ("https://app.example.com:444/", False),
        ("javascript:alert(1)", False),
        ("//app.example.com/", False),
        ("https://app.example.com\\@evil.net/", False),
    ],
)
def test_redirects_must_be_under_an_allowed_origin(target: str, ok: bool) -> None:
    assert redirects.allowed(target, ["https://app.example.com"]) is ok


def test_an_origin_with_a_path_allows_only_that_path() -> None:
    origins = [redirects.normal_origin("https://app.example.com/tenant-a/")]
    assert redirects.allowed("https://app.example.com/tenant-a/done", origins)
    assert not redirects.allowed("https://app.example.com/tenant-ab/done", origins)
    assert not redirects.allowed("https://app.example.com/", origins)


def test_params_are_added_to_redirect_to() -> None:
    url = redirects.with_params("https://app.example.com/c?x=1&account_id=old#f", account_id="new")
    assert url == "https://app.example.com/c?x=1&account_id=new#f"
