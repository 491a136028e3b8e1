"""One attempt of postroom.mail.send for its event (worker.tasks.send runs it in the engine).

The account is read tenant-scoped, with the event's draft, in a transaction of its own that
commits before any server is talked to; the engine's session (which finishes the event) is
not used before the send is over, so it holds no connection during the SMTP conversation
(docs/sending.md). An error that quoted the mail leaves with the draft's strings cut out.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from database.engine import Database
from database.models import Event
from database.repositories.accounts import access as accounts_repo
from services.errors import PermissionDenied
from services.events.outcome import Outcome
from services.outbound.send import load_request, redact_error, send_message
from settings import Settings


async def send_job(
    db: Database,
    *,
    settings: Settings,
    nylas: Any,
    event: Event,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    is_transient: Callable[[BaseException], bool],
) -> Outcome:
    """Send the event's draft from the account; `is_transient` (worker.policy) decides how
    a redacted error is marked."""
    async with db.transaction() as s:
        # Tenant-scoped load first: an account of another tenant is never touched.
        account = await accounts_repo.get_for_tenant(s, tenant_id, account_id)
        if account is None or (event.tenant_id is not None and event.tenant_id != tenant_id):
            raise PermissionDenied("The account does not belong to this tenant.")
        request = await load_request(s, tenant_id=tenant_id, event_id=event.id)
    try:
        return await send_message(
            db, settings=settings, account=account, event=event, request=request, nylas=nylas
        )
    except Exception as exc:
        private = request.private_strings()
        redacted = redact_error(exc, private, transient=is_transient(exc))
        if redacted is exc:
            raise
        raise redacted from None  # the original quoted the mail: not even as context
