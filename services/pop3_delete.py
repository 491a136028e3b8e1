"""Deleting POP3 messages: DELE by the message number the UIDL has on this connection.

Message numbers are only valid within one session (RFC 1939 7), so the UIDL listing of the
same session maps each stored UIDL to its current number. DELE only marks; the server
removes the messages when QUIT is answered +OK, so the rows are marked deleted only then.
A message whose UIDL is no longer listed is already gone: its row is marked too.
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Account, Message
from services.mail_accounts import pop3_config
from services.pop3 import Pop3Client
from settings import Settings


async def delete_pop3(
    session: AsyncSession,
    settings: Settings,
    account: Account,
    messages: list[Message],
    *,
    permanent: bool,
) -> list[uuid.UUID]:
    """The ids whose rows may be marked deleted (POP3 has no Trash to move to)."""
    if not permanent:
        return [m.id for m in messages]
    config = await pop3_config(session, settings, account)
    client = await Pop3Client(config).connect()
    try:
        numbers = {uidl: n for n, uidl in await client.uidl()}
        await client.delete([numbers[m.provider_id] for m in messages if m.provider_id in numbers])
        await client.quit()
    except BaseException:
        # No QUIT after a failure: the server then removes none of the messages marked, and
        # a retry finds them all (or finds them gone, when QUIT's answer was what got lost).
        client.abort()
        raise
    return [m.id for m in messages]
