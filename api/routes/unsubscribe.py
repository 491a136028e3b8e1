"""One-click unsubscribe (RFC 8058): `POST /u/{token}` suppresses the recipient the signed
token names, for the tenant that sent; `GET /u/{token}` only shows a page with the button.

No API key: the token is the authority. Neither answer names the address or the sender, so
a forwarded link tells its reader nothing and the page is nothing to imitate.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import HTMLResponse, PlainTextResponse

from api.deps import SettingsDep, UowDep
from api.schemas.common import error_responses
from services.errors import NotFound
from services.reports import suppressions, tokens

router = APIRouter(prefix="/u", tags=["unsubscribe"], responses=error_responses(404))
Token = Annotated[str, Path(max_length=tokens.MAX_UNSUB_TOKEN)]
# Nothing on the page loads from anywhere, and the form posts back to this origin only.
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>Unsubscribe</title>
<style>body{font-family:sans-serif;max-width:32em;margin:4em auto;padding:0 1em}</style>
</head><body>
<h1>Unsubscribe</h1>
<p>Stop receiving these emails at this address?</p>
<form method="post"><button type="submit" id="unsubscribe">Unsubscribe</button></form>
</body></html>
"""
DONE = "You are unsubscribed: no more of these emails will be sent to this address.\n"


@router.get("/{token}", response_class=HTMLResponse)
async def confirm_page(token: Token, settings: SettingsDep) -> HTMLResponse:
    """A confirmation page; it changes nothing (mail scanners follow GET links)."""
    if tokens.read_unsubscribe(settings, token) is None:
        raise NotFound("This unsubscribe link is not valid.")
    return HTMLResponse(_PAGE, headers=_HEADERS)


@router.post("/{token}", response_class=PlainTextResponse)
async def unsubscribe(token: Token, settings: SettingsDep, uow: UowDep) -> PlainTextResponse:
    """Suppress the recipient (RFC 8058 one-click; the same again changes nothing)."""
    if not await suppressions.unsubscribe(uow.session, settings=settings, token=token):
        raise NotFound("This unsubscribe link is not valid.")
    await uow.commit()
    return PlainTextResponse(DONE, headers=_HEADERS)
