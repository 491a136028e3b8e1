"""Deleting POP3 messages: DELE by the message number the UIDL has on this connection.

Message numbers are only valid within one session (RFC 1939 7), so the UIDL listing of the
same session maps each stored UIDL to its current number. DELE only marks; the server
removes the messages when QUIT is answered +OK, so the rows are marked deleted only then.
A message whose UIDL is no longer listed is already gone: its row is marked too.
"""

from __future__ import annotations

import uuid

from database.models import Message
from services.pop3.client import Pop3Client, Pop3Config


async def delete_pop3(
    config: Pop3Config | None, messages: list[Message], *, permanent: bool
) -> list[uuid.UUID]:
    """The ids whose rows may be marked deleted (POP3 has no Trash to move to).

    No database here: the caller read `config` (needed when permanent) and commits the marks.
    """
    if not permanent:
        return [m.id for m in messages]
    assert config is not None
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
